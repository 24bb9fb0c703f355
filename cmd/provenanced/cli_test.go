package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/ib1/provenanced/testenv"
)

// Every command, and every command made of subcommands, answers -h with its usage and
// exit status 0; a script that asks for help has not made a mistake.
func TestEveryCommandHelpExitsZero(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, h := range []string{"-h", "--help"} {
			var out, errw bytes.Buffer
			if code := run([]string{n, h}, &out, &errw); code != 0 {
				t.Errorf("%s %s: exit status %d, want 0; stderr:\n%s", n, h, code, errw.String())
			}
			if !strings.Contains(errw.String(), "usage: provenanced "+n) {
				t.Errorf("%s %s printed no usage of %s:\n%s", n, h, n, errw.String())
			}
		}
	}
}

// "help CMD" prints that command's help (on standard output), not the list of commands.
func TestHelpCommand(t *testing.T) {
	for _, args := range [][]string{{"help", "sign"}, {"help", "cert"}, {"help", "record", "verify"}} {
		var out, errw bytes.Buffer
		if code := run(args, &out, &errw); code != 0 {
			t.Fatalf("%v: exit status %d; %s", args, code, errw.String())
		}
		want := "usage: provenanced " + strings.Join(args[1:], " ")
		if !strings.HasPrefix(out.String(), want) {
			t.Errorf("%v: want output beginning %q, got:\n%s", args, want, out.String())
		}
		if strings.Contains(out.String(), "COMMAND [flags]") {
			t.Errorf("%v printed the general help:\n%s", args, out.String())
		}
	}
	// The sign command's flags are described.
	var out bytes.Buffer
	run([]string{"help", "sign"}, &out, io.Discard)
	for _, flag := range []string{"-digest", "-key", "-socket", "-url"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("help sign does not describe %s:\n%s", flag, out.String())
		}
	}
	// An unknown command after help is an error, with the list of commands.
	var errw bytes.Buffer
	if code := run([]string{"help", "nosuch"}, io.Discard, &errw); code != 2 || !strings.Contains(errw.String(), `unknown command "nosuch"`) || !strings.Contains(errw.String(), "commands:") {
		t.Errorf("help nosuch: exit %d, stderr:\n%s", code, errw.String())
	}
	// Bare help, -h and --help: the general help on standard output, exit 0.
	for _, a := range []string{"help", "-h", "--help"} {
		var out bytes.Buffer
		if code := run([]string{a}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "commands:") {
			t.Errorf("%s: exit %d, output:\n%s", a, code, out.String())
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, a := range []string{"--version", "-version", "version"} {
		var out bytes.Buffer
		if code := run([]string{a}, &out, io.Discard); code != 0 {
			t.Fatalf("%s: exit status %d", a, code)
		}
		if !strings.HasPrefix(out.String(), "provenanced "+versionString()+"\n") {
			t.Errorf("%s printed %q", a, out.String())
		}
	}
}

// The version given at build time (-ldflags -X main.version) is what the binary reports.
func TestVersionFromLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "provenanced")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=v9.8.7 -X github.com/ib1/provenanced/daemon.Revision=0123abc", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "provenanced v9.8.7\n") || !strings.Contains(string(out), "revision: 0123abc\n") {
		t.Errorf("--version printed:\n%s", out)
	}
}

// A failed connection says what is wrong and what to do: the flag that names the daemon
// and the command that starts it.
func TestConnectionErrorsSayWhatToDo(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false) // a socket file without a daemon, as after a crash
	l.Close()
	freeAddr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"missing socket", []string{"keys", "-socket", filepath.Join(dir, "none.sock")}, []string{"no socket at " + filepath.Join(dir, "none.sock"), "-socket PATH", "provenanced serve"}},
		{"stale socket", []string{"health", "-socket", stale}, []string{"nothing listens on " + stale, "-socket PATH", "provenanced serve"}},
		{"refused URL", []string{"sign", "-key", "k", "-digest", strings.Repeat("ab", 32), "-url", "http://" + freeAddr}, []string{"nothing listens at http://" + freeAddr, "-url URL", "provenanced serve"}},
	}
	for _, c := range cases {
		var errw bytes.Buffer
		if code := run(c.args, io.Discard, &errw); code != 1 {
			t.Errorf("%s: exit status %d, want 1", c.name, code)
		}
		for _, w := range c.want {
			if !strings.Contains(errw.String(), w) {
				t.Errorf("%s: the error does not say %q:\n%s", c.name, w, errw.String())
			}
		}
	}
}

// A socket the user may not open: the hint names the group and the -socket flag. As root
// (CI) permission checks do not apply, so the binary runs as nobody.
func TestConnectionErrorPermissionDenied(t *testing.T) {
	dir, err := os.MkdirTemp("", "provenanced-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(sock, 0o600)
	bin := filepath.Join(dir, "provenanced")
	data, err := os.ReadFile(daemonBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "keys", "-socket", sock)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		os.Chmod(sock, 0o000)
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v:\n%s", err, out)
	}
	for _, w := range []string{"permission denied on " + sock, "group", "-socket PATH"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("the error does not say %q:\n%s", w, out)
		}
	}
}

// PROVENANCED_SOCKET=off is the daemon's "no socket" (the container image's daemon has
// none); the CLI then goes to PROVENANCED_URL rather than look for a socket named "off".
func TestSocketOffMeansURL(t *testing.T) {
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROVENANCED_SOCKET", "off")
	t.Setenv("PROVENANCED_URL", "http://"+addr)
	var errw bytes.Buffer
	run([]string{"health"}, io.Discard, &errw)
	if !strings.Contains(errw.String(), "nothing listens at http://"+addr) {
		t.Errorf("with PROVENANCED_SOCKET=off the CLI did not go to PROVENANCED_URL:\n%s", errw.String())
	}
}

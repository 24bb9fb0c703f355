package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/testenv"
)

// The README is tested: a newcomer pastes its command blocks in order, so a test does the
// same. A fenced block runs only when the line before it is a directive, an HTML comment a
// reader of the rendered page never sees:
//
//	<!-- test -->                           run it; it must exit 0
//	<!-- test: fails -->                    run it; it must exit non-zero
//	<!-- test: background; ready: CMD -->   start it and leave it running (make run, serve)
//	                                        until its section ends (a heading of its own
//	                                        level or higher); CMD must succeed within 3
//	                                        minutes before the next block runs
//	<!-- test: output -->                   the block shows output: each of its lines must
//	                                        appear, in order, in what the block before it
//	                                        printed ("..." stands for any text)
//	<!-- test: file PATH -->                the block is written to PATH (a config file)
//	<!-- not run: WHY -->                   the block cannot run here (systemd, docker, real
//	                                        AWS); a shell block is checked with shellcheck
//
// The blocks run in order, in one bash each, in a scratch copy of the repository, inside a
// network namespace of their own: the README's own addresses (127.0.0.1:8080 and the rest)
// are then free whatever else runs on the machine, and nothing leaves it. /etc/provenanced,
// /run/provenanced and /usr/local/bin become folders of the scratch copy.
func TestREADME(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the README test needs root: it runs the blocks in a network namespace (ip netns) of their own")
	}
	for _, tool := range []string{"ip", "make", "curl", "xxd", "shellcheck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README test needs %s (make deps installs it): %v", tool, err)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := readmeBlocks(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := countRun(blocks); n < 10 {
		t.Fatalf("only %d README blocks are marked to run; the markers were lost?", n)
	}

	scratch := t.TempDir()
	copyRepo(t, root, scratch)
	subst := strings.NewReplacer(
		"/etc/provenanced", filepath.Join(scratch, "etc/provenanced"),
		"/run/provenanced", filepath.Join(scratch, "run/provenanced"),
		"/usr/local/bin", filepath.Join(scratch, "usr/local/bin"),
	)
	os.MkdirAll(filepath.Join(scratch, "usr/local/bin"), 0o755)

	ns := fmt.Sprintf("provreadme%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up: %v: %s", err, out)
	}

	env := append(os.Environ(),
		"PATH="+filepath.Join(scratch, "usr/local/bin")+":"+os.Getenv("PATH"),
		"GOFLAGS=-mod=mod", "GOPROXY=off", // everything is in the module cache already; never wait on the network
		"HOME="+filepath.Join(scratch, "home"),
		"GOCACHE="+goEnv(t, "GOCACHE"), "GOMODCACHE="+goEnv(t, "GOMODCACHE"),
		"TERM=dumb",
	)
	os.MkdirAll(filepath.Join(scratch, "home"), 0o755)

	type running struct {
		cmd    *exec.Cmd
		exited chan struct{} // closed once cmd.Wait returned
		level  int           // of the heading it was started under
	}
	var background []running
	// stopBackground stops what was started under a heading of level or deeper.
	stopBackground := func(level int) {
		var keep, stop []running
		for _, r := range background {
			if r.level >= level {
				stop = append(stop, r)
			} else {
				keep = append(keep, r)
			}
		}
		for _, r := range stop {
			syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		}
		for _, r := range stop {
			select {
			case <-r.exited:
			case <-time.After(20 * time.Second):
				syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
				<-r.exited
			}
		}
		background = keep
	}
	t.Cleanup(func() { stopBackground(0) })
	level := 1

	var lastOutput string
	var lastLine int
	for i, b := range blocks {
		if b.heading > 0 {
			stopBackground(b.heading)
			level = b.heading
			continue
		}
		text := subst.Replace(b.text)
		where := fmt.Sprintf("README.md:%d", b.line)
		t.Logf("%s: %s", where, b.kind)
		switch {
		case b.kind == "not run":
			if b.lang == "sh" || b.lang == "bash" {
				shellcheck(t, where, text)
			}
		case b.kind == "file":
			p := subst.Replace(b.arg)
			if !filepath.IsAbs(p) {
				p = filepath.Join(scratch, p)
			}
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
		case b.kind == "output":
			if err := matchOutput(text, lastOutput); err != nil {
				t.Errorf("%s: the output shown is not what README.md:%d printed: %v\nit printed:\n%s", where, lastLine, err, lastOutput)
			}
		case b.kind == "background":
			shellcheck(t, where, text)
			cmd := blockCommand(ns, scratch, env, text)
			out := new(testenv.SyncBuffer)
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			background = append(background, running{cmd, exited, level})
			ready := subst.Replace(b.arg)
			if !waitReady(ns, scratch, env, ready, 3*time.Minute, exited) {
				t.Fatalf("%s: not ready (%s); it printed:\n%s", where, ready, out.String())
			}
		case b.kind == "run" || b.kind == "fails":
			shellcheck(t, where, text)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			cmd := blockCommandContext(ctx, ns, scratch, env, text)
			out, err := cmd.CombinedOutput()
			cancel()
			lastOutput, lastLine = string(out), b.line
			if b.kind == "run" && err != nil {
				t.Fatalf("%s (block %d): %v\n%s\nprinted:\n%s", where, i, err, text, out)
			}
			if b.kind == "fails" && err == nil {
				t.Fatalf("%s: the README says this fails, and it exited 0:\n%s", where, out)
			}
		}
	}
}

type readmeBlock struct {
	line    int    // of the opening fence
	lang    string // the fence's first word
	kind    string // run, fails, background, output, file, not run
	arg     string // the ready command, or the file path
	text    string
	heading int // the level of a heading (not a block), 0 for a block
}

var headingRE = regexp.MustCompile(`^(#{1,6}) `)

var directiveRE = regexp.MustCompile(`^<!-- (test|not run)(?::\s*(.*?))?\s*-->$`)

// readmeBlocks returns the README's directed blocks and its headings, in order.
func readmeBlocks(path string) ([]readmeBlock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var blocks []readmeBlock
	var directive string
	var cur *readmeBlock
	var body strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if cur != nil {
			if strings.HasPrefix(line, "```") {
				cur.text = body.String()
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			body.WriteString(line)
			body.WriteByte('\n')
			continue
		}
		switch {
		case headingRE.MatchString(line):
			blocks = append(blocks, readmeBlock{line: n, heading: len(headingRE.FindStringSubmatch(line)[1])})
			directive = ""
		case directiveRE.MatchString(line):
			directive = line
		case strings.HasPrefix(line, "```"):
			lang, _, _ := strings.Cut(strings.TrimPrefix(line, "```"), " ")
			if directive == "" {
				// An undirected block is neither run nor checked: it is code for another
				// language (Go, TOML shown as reference) or output; skip it whole.
				cur = &readmeBlock{line: n, lang: lang, kind: "skip"}
				body.Reset()
				continue
			}
			b, err := parseDirective(directive)
			if err != nil {
				return nil, fmt.Errorf("README.md:%d: %v", n-1, err)
			}
			b.line, b.lang = n, lang
			cur = &b
			body.Reset()
			directive = ""
		case strings.TrimSpace(line) != "":
			directive = "" // a directive applies only to the block right after it
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("README.md:%d: a code block that never closes", cur.line)
	}
	var out []readmeBlock
	for _, b := range blocks {
		if b.kind != "skip" {
			out = append(out, b)
		}
	}
	return out, nil
}

func parseDirective(line string) (readmeBlock, error) {
	m := directiveRE.FindStringSubmatch(line)
	if m[1] == "not run" {
		if strings.TrimSpace(m[2]) == "" {
			return readmeBlock{}, fmt.Errorf("<!-- not run --> needs a reason")
		}
		return readmeBlock{kind: "not run"}, nil
	}
	args := strings.TrimSpace(m[2])
	switch {
	case args == "":
		return readmeBlock{kind: "run"}, nil
	case args == "fails":
		return readmeBlock{kind: "fails"}, nil
	case args == "output":
		return readmeBlock{kind: "output"}, nil
	case strings.HasPrefix(args, "file "):
		return readmeBlock{kind: "file", arg: strings.TrimSpace(strings.TrimPrefix(args, "file "))}, nil
	case strings.HasPrefix(args, "background; ready: "):
		return readmeBlock{kind: "background", arg: strings.TrimPrefix(args, "background; ready: ")}, nil
	}
	return readmeBlock{}, fmt.Errorf("unknown directive %q", line)
}

func countRun(blocks []readmeBlock) int {
	n := 0
	for _, b := range blocks {
		if b.kind == "run" || b.kind == "fails" || b.kind == "background" {
			n++
		}
	}
	return n
}

// matchOutput checks that each non-blank line of want appears in got, in order.
func matchOutput(want, got string) error {
	rest := got
	for _, line := range strings.Split(want, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		parts := strings.Split(line, "...")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		re := regexp.MustCompile(strings.Join(parts, ".*"))
		loc := re.FindStringIndex(rest)
		if loc == nil {
			return fmt.Errorf("no line matches %q", line)
		}
		rest = rest[loc[1]:]
	}
	return nil
}

func blockCommand(ns, dir string, env []string, script string) *exec.Cmd {
	return blockCommandContext(context.Background(), ns, dir, env, script)
}

// blockCommandContext runs script with bash -euo pipefail in the namespace, as the leader
// of its own process group so that what it starts can be stopped with it.
func blockCommandContext(ctx context.Context, ns, dir string, env []string, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// waitReady runs ready until it succeeds, the block exits, or limit passes.
func waitReady(ns, dir string, env []string, ready string, limit time.Duration, exited <-chan struct{}) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if err := blockCommand(ns, dir, env, ready).Run(); err == nil {
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}

// shellcheck lints a shell block as bash; SC2164 (cd without || exit) and SC2034 are
// noise for a snippet a person pastes.
func shellcheck(t *testing.T, where, script string) {
	t.Helper()
	cmd := exec.Command("shellcheck", "--shell=bash", "--severity=warning", "-e", "SC2164,SC2034", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: shellcheck: %v\n%s", where, err, out)
	}
}

// copyRepo copies the repository's files (tracked and untracked, not ignored) as a fresh
// clone would have them.
func copyRepo(t *testing.T, root, dst string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the work tree
		}
		if !st.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// The changelog's latest version is the one the binary reports.
func TestChangelog(t *testing.T) {
	data, err := os.ReadFile("../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+[^\]]*)\]`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("CHANGELOG.md has no version heading (## [X.Y.Z] - DATE)")
	}
	if m[1] != release {
		t.Errorf("CHANGELOG.md's latest version is %s, the binary's (release in version.go) is %s", m[1], release)
	}
}

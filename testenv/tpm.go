package testenv

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TPMInstall is what to run when the TPM test stack is missing.
const TPMInstall = "apt-get install swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtss2-tcti-swtpm0 libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools dbus opensc"

// tpmModules are where distributions put tpm2-pkcs11.
var tpmModules = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
	"/usr/lib64/pkcs11/libtpm2_pkcs11.so",
	"/usr/lib/pkcs11/libtpm2_pkcs11.so",
}

// FindTPM returns the path of tpm2-pkcs11 ($TPM2_PKCS11_MODULE, or where distributions put
// it), having checked that the programs a TPM token needs are there too.
func FindTPM() (string, error) {
	var missing []string
	for _, tool := range []string{"swtpm", "tpm2-abrmd", "dbus-daemon", "dbus-send", "tpm2_ptool", "tpm2_dictionarylockout", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	module := os.Getenv("TPM2_PKCS11_MODULE")
	if module == "" {
		for _, p := range tpmModules {
			if _, err := os.Stat(p); err == nil {
				module = p
				break
			}
		}
	}
	if module == "" {
		missing = append(missing, "libtpm2_pkcs11.so")
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("testenv: the TPM test stack is not installed (missing %s): run %s", strings.Join(missing, ", "), TPMInstall)
	}
	return module, nil
}

// TPM is a TPM 2.0 token as a real machine has one, made of its real parts: the swtpm
// simulator on Unix sockets of its own, tpm2-abrmd (the resource manager that lets
// several programs share the TPM, as the kernel's /dev/tpmrm0 does) on a private D-Bus
// bus, and a tpm2-pkcs11 store. Nothing is shared with another TPM or the machine's
// buses, so tests may run several at once. Stop ends every process.
type TPM struct {
	Dir    string // holds state/, store/, so.pin
	Store  string // TPM2_PKCS11_STORE
	Module string // libtpm2_pkcs11.so
	TCTI   string // how the library and the tools reach the TPM: through abrmd
	Bus    string // DBUS_SESSION_BUS_ADDRESS of the private bus
	Socket string // swtpm's command socket (the control socket is Socket+".ctrl")

	mu      sync.Mutex
	swtpm   *exec.Cmd
	bus     *exec.Cmd
	abrmd   *exec.Cmd
	pid     int                         // the tpm2_ptool primary object's id
	exits   map[*exec.Cmd]chan struct{} // closed when the process has exited
	sockDir string
	stopped bool
}

// StartTPM starts a TPM token stack in dir and waits until the TPM answers.
func StartTPM(dir string) (*TPM, error) {
	module, err := FindTPM()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	t := &TPM{Dir: dir, Store: filepath.Join(dir, "store"), Module: module}
	for _, d := range []string{filepath.Join(dir, "state"), t.Store} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			t.Stop()
		}
	}()
	// A folder with a short path: a Unix socket's path has room for about 100 bytes.
	if t.sockDir, err = os.MkdirTemp("", "swtpm-"); err != nil {
		return nil, err
	}
	t.Socket = filepath.Join(t.sockDir, "tpm")
	if err := t.startSWTPM(); err != nil {
		return nil, err
	}
	if err := t.startBus(); err != nil {
		return nil, err
	}
	if err := t.startABRMD(); err != nil {
		return nil, err
	}
	out, err := t.Run("tpm2_ptool", "init")
	if err != nil {
		return nil, err
	}
	i := bytes.Index(out, []byte("id:"))
	if i < 0 {
		return nil, fmt.Errorf("testenv: tpm2_ptool init said %q", out)
	}
	if _, err := fmt.Sscanf(string(out[i:]), "id: %d", &t.pid); err != nil {
		return nil, fmt.Errorf("testenv: tpm2_ptool init said %q", out)
	}
	ok = true
	return t, nil
}

// startSWTPM starts swtpm on its two Unix sockets (commands, and control beside it as
// the swtpm TCTI expects: PATH.ctrl) and waits until it listens. Unix sockets rather than
// loopback ports: nothing else on the machine can take them, or reach them.
func (t *TPM) startSWTPM() error {
	os.Remove(t.Socket)
	os.Remove(t.Socket + ".ctrl")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(t.Dir, "state"),
		"--server", "type=unixio,path="+t.Socket,
		"--ctrl", "type=unixio,path="+t.Socket+".ctrl",
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+filepath.Join(t.Dir, "swtpm.log"))
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: swtpm: %v", err)
	}
	exited := t.track(cmd)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The control socket takes any number of connections; the command socket is
		// kept for abrmd.
		if c, err := net.Dial("unix", t.Socket+".ctrl"); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return errors.New("testenv: swtpm exited at start")
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return errors.New("testenv: swtpm did not listen within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.mu.Lock()
	t.swtpm = cmd
	t.mu.Unlock()
	return nil
}

// RestartSWTPM starts the simulator again on its ports with its state, after KillSWTPM:
// the TPM is back, with its keys.
func (t *TPM) RestartSWTPM() error { return t.startSWTPM() }

func (t *TPM) startBus() error {
	conf := filepath.Join(t.Dir, "bus.conf")
	// A session bus of this TPM's own: abrmd owns its name there, and only programs
	// given its address (this token's library, its tools) see it.
	text := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--print-address", "--nofork", "--nopidfile")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = nil
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: dbus-daemon: %v", err)
	}
	t.mu.Lock()
	t.bus = cmd
	t.mu.Unlock()
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		for s.Scan() {
		}
	}()
	t.track(cmd)
	select {
	case addr, ok := <-line:
		if !ok || addr == "" {
			return errors.New("testenv: dbus-daemon printed no address")
		}
		t.Bus = addr
	case <-time.After(10 * time.Second):
		return errors.New("testenv: dbus-daemon printed no address within 10s")
	}
	return nil
}

func (t *TPM) startABRMD() error {
	name := "com.intel.tss2.Tabrmd.provenanced" + strings.ReplaceAll(filepath.Base(t.sockDir), "-", "_")
	args := []string{"--session", "--dbus-name=" + name, "--tcti=swtpm:path=" + t.Socket, "--flush-all"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-root")
	}
	cmd := exec.Command("tpm2-abrmd", args...)
	cmd.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS="+t.Bus)
	logf, err := os.Create(filepath.Join(t.Dir, "abrmd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: tpm2-abrmd: %v", err)
	}
	t.mu.Lock()
	t.abrmd = cmd
	t.mu.Unlock()
	exited := t.track(cmd)
	t.TCTI = "tabrmd:bus_type=session,bus_name=" + name
	deadline := time.Now().Add(15 * time.Second)
	for {
		q := exec.Command("dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", "string:"+name)
		q.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS="+t.Bus)
		if out, err := q.Output(); err == nil && bytes.Contains(out, []byte("boolean true")) {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(t.Dir, "abrmd.log"))
			return fmt.Errorf("testenv: tpm2-abrmd exited at start: %s", bytes.TrimSpace(b))
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("testenv: tpm2-abrmd did not take its D-Bus name within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Env is what a program using this TPM needs: where the store is, how to reach the TPM,
// and the private bus. TSS2_LOG and TPM2_PKCS11_LOG_LEVEL are left to the caller.
func (t *TPM) Env() []string {
	return []string{
		"TPM2_PKCS11_STORE=" + t.Store,
		"TPM2_PKCS11_TCTI=" + t.TCTI,
		"TPM2TOOLS_TCTI=" + t.TCTI,
		"DBUS_SESSION_BUS_ADDRESS=" + t.Bus,
	}
}

// SetEnv sets Env in this process, for a test binary that loads the library itself.
func (t *TPM) SetEnv() {
	for _, e := range t.Env() {
		k, v, _ := strings.Cut(e, "=")
		os.Setenv(k, v)
	}
}

// Run runs a TPM tool (tpm2_ptool, tpm2_*, pkcs11-tool on this token's library) with
// this TPM's environment. Errors carry the tool's output; the arguments, which may hold
// PINs, are not repeated.
func (t *TPM) Run(name string, args ...string) ([]byte, error) {
	what := name
	if len(args) > 0 {
		what += " " + args[0]
	}
	if name == "pkcs11-tool" {
		args = append([]string{"--module", t.Module}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), t.Env()...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("testenv: %s: %v: %s", what, err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// InitToken adds a token to the store (tpm2_ptool addtoken) with an SO PIN and a user
// PIN.
func (t *TPM) InitToken(label, soPIN, pin string) error {
	_, err := t.Run("tpm2_ptool", "addtoken", fmt.Sprintf("--pid=%d", t.pid), "--sopin="+soPIN, "--userpin="+pin, "--label="+label)
	return err
}

// GenerateKey has the TPM generate a key pair in the token (pkcs11-tool --keypairgen).
func (t *TPM) GenerateKey(token, pin string, k KeySpec) error {
	return generateKey(t.Run, token, pin, k)
}

// PublicKey reads the public key object with label (and id) from the token.
func (t *TPM) PublicKey(token string, k KeySpec) (crypto.PublicKey, error) {
	return readPublicKey(t.Run, t.Dir, token, k)
}

// ClearLockout ends the TPM's dictionary-attack lockout (the owner of a real TPM does
// the same, with the lockout hierarchy's password, here empty).
func (t *TPM) ClearLockout() error {
	_, err := t.Run("tpm2_dictionarylockout", "--clear-lockout")
	return err
}

// Pause stops swtpm (SIGSTOP): the TPM hangs, as a wedged device or bus does.
func (t *TPM) Pause() error {
	return t.signal(func() *exec.Cmd { return t.swtpm }, "swtpm", syscall.SIGSTOP)
}

// Resume lets a paused swtpm go on.
func (t *TPM) Resume() error {
	return t.signal(func() *exec.Cmd { return t.swtpm }, "swtpm", syscall.SIGCONT)
}

// PauseABRMD stops tpm2-abrmd (SIGSTOP): every call through the resource manager hangs,
// whether or not swtpm is running, as with a wedged /dev/tpmrm0.
func (t *TPM) PauseABRMD() error {
	return t.signal(func() *exec.Cmd { return t.abrmd }, "tpm2-abrmd", syscall.SIGSTOP)
}

// ResumeABRMD lets a paused tpm2-abrmd go on.
func (t *TPM) ResumeABRMD() error {
	return t.signal(func() *exec.Cmd { return t.abrmd }, "tpm2-abrmd", syscall.SIGCONT)
}

// signal sends sig to the process which returns, read under t.mu.
func (t *TPM) signal(which func() *exec.Cmd, name string, sig syscall.Signal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	cmd := which()
	if cmd == nil || cmd.Process == nil {
		return errors.New("testenv: " + name + " is not running")
	}
	return cmd.Process.Signal(sig)
}

// track reaps cmd when it exits and returns the channel closed then.
func (t *TPM) track(cmd *exec.Cmd) chan struct{} {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.mu.Lock()
	if t.exits == nil {
		t.exits = map[*exec.Cmd]chan struct{}{}
	}
	t.exits[cmd] = done
	t.mu.Unlock()
	return done
}

// kill kills cmd and waits (a little) until it has exited, so that its files can go.
// The caller holds t.mu.
func (t *TPM) kill(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Kill()
	if done, ok := t.exits[cmd]; ok {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// KillSWTPM kills the simulator: the TPM is dead.
func (t *TPM) KillSWTPM() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kill(t.swtpm)
	t.swtpm = nil
}

// Stop ends swtpm, abrmd and the bus, and waits until they have exited. It may be called
// more than once.
func (t *TPM) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	for _, c := range []*exec.Cmd{t.abrmd, t.bus, t.swtpm} {
		t.kill(c)
	}
	if t.sockDir != "" {
		os.RemoveAll(t.sockDir)
	}
}

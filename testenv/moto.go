package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// motoStartWait bounds moto's start: importing it takes seconds on a loaded machine.
const motoStartWait = 60 * time.Second

// MotoMissing says what to do where moto cannot be started; .ci/deps says the same.
const MotoMissing = "the KMS tests run against moto 5.2.1 (python3 -m moto.server) beside local-kms; " +
	"install it into the python3 on PATH (pip install 'moto[server]==5.2.1'), or name an interpreter that has it in MOTO_PYTHON"

// Moto is moto's server (github.com/getmoto/moto, `python3 -m moto.server`), a second
// KMS implementation, written in Python by other people than local-kms's, serving on a
// free loopback port. Its account is LocalKMSAccount; any region works, and the tests use
// LocalKMSRegion. It takes any credentials until EnforceIAM, after which it checks each
// request's signature and what the identity's IAM policy allows, as AWS does.
//
// Importing moto takes seconds, so one server serves a test process's tests one after
// another, emptied between them (moto's own reset); Stop kills it, and the next
// StartMoto starts another. Its keys live in its memory. Where it differs from AWS KMS in
// what the tests meet, Quirks says so.
type Moto struct {
	port int
	cmd  *exec.Cmd
	done chan struct{}
	log  *tailBuffer // what moto prints: a line per request

	mu    sync.Mutex
	admin Credentials // after EnforceIAM: the identity Client and the IAM calls use

	kmsAdmin
}

// Credentials are an IAM identity's access key.
type Credentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
}

var motoRunning = regexp.MustCompile(`Running on http://127\.0\.0\.1:([0-9]+)`)

// motoShared is the test process's moto; mu is held by the test using it, so that tests
// that run in parallel take turns rather than empty it under each other.
var motoShared struct {
	mu sync.Mutex
	m  *Moto

	ownerMu sync.Mutex
	owner   TB // the test holding mu: a second StartMoto of its own would wait for ever
}

// StartMoto gives the test an empty moto, started if none is running, and takes it back
// when the test ends. Where moto is not installed the test fails saying what to install:
// CI machines have it, and a KMS suite that quietly ran on one emulator would prove less
// than it claims.
func StartMoto(t TB) *Moto {
	t.Helper()
	motoShared.ownerMu.Lock()
	again := motoShared.owner == t
	motoShared.ownerMu.Unlock()
	if again {
		t.Fatalf("testenv: StartMoto called twice in one test; use the Moto it returned")
	}
	motoShared.mu.Lock()
	motoShared.ownerMu.Lock()
	motoShared.owner = t
	motoShared.ownerMu.Unlock()
	t.Cleanup(func() {
		motoShared.ownerMu.Lock()
		motoShared.owner = nil
		motoShared.ownerMu.Unlock()
		motoShared.mu.Unlock()
	})
	m := motoShared.m
	if m != nil && m.Pid() != 0 {
		if err := m.reset(); err == nil {
			return m
		}
		m.Stop()
	}
	python := os.Getenv("MOTO_PYTHON")
	if python == "" {
		python = "python3"
	}
	m = &Moto{log: &tailBuffer{max: 256 << 10}}
	m.kmsAdmin = kmsAdmin{m.Client}
	if err := m.start(python); err != nil {
		t.Fatalf("%v", err)
	}
	motoShared.m = m
	return m
}

func (m *Moto) start(python string) error {
	// Port 0: werkzeug takes a free port and prints it, so no other process can take a
	// port chosen for it in between.
	cmd := exec.Command(python, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0")
	cmd.Env = append(os.Environ(), "MOTO_ACCOUNT_ID="+LocalKMSAccount, "PYTHONUNBUFFERED=1")
	cmd.Stdout, cmd.Stderr = m.log, m.log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: starting moto with %s: %w; %s", python, err, MotoMissing)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(motoStartWait)
	for {
		if mm := motoRunning.FindStringSubmatch(m.log.String()); mm != nil {
			fmt.Sscanf(mm[1], "%d", &m.port)
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.port), time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-m.done:
			m.cmd = nil
			if strings.Contains(m.log.String(), "No module named") {
				return fmt.Errorf("testenv: %s has no moto: %s", python, MotoMissing)
			}
			return fmt.Errorf("testenv: moto exited at start:\n%s", m.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Stop()
			return fmt.Errorf("testenv: moto did not answer within %v:\n%s", motoStartWait, m.log)
		}
	}
}

// reset empties moto (keys, aliases, IAM) and has it take any credentials again.
func (m *Moto) reset() error {
	for _, call := range [][2]string{{"/moto-api/reset", ""}, {"/moto-api/reset-auth", "inf"}} {
		resp, err := http.Post(m.Endpoint()+call[0], "text/plain", strings.NewReader(call[1]))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("moto %s: HTTP %d", call[0], resp.StatusCode)
		}
	}
	m.mu.Lock()
	m.admin = Credentials{}
	m.mu.Unlock()
	return nil
}

// Log is the tail of what moto printed: a line per request it answered.
func (m *Moto) Log() string { return m.log.String() }

// Name is "moto".
func (m *Moto) Name() string { return "moto" }

// Quirks of moto 5.2.1: see KMSQuirks.
func (m *Moto) Quirks() KMSQuirks {
	return KMSQuirks{DigestHashedAgain: true, IgnoresKeyState: true, NoRestart: true, ChecksIdentities: true}
}

// Endpoint is moto's URL on the loopback interface.
func (m *Moto) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", m.port) }

// Pid is moto's process id, or 0 once stopped.
func (m *Moto) Pid() int {
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Stop kills moto and waits for it; its keys are gone.
func (m *Moto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Client is an SDK client of moto: with the dummy credentials, or the administrator's
// once EnforceIAM has made moto check them.
func (m *Moto) Client() *kms.Client {
	c := m.creds()
	return staticClient(m.Endpoint(), c.AccessKeyID, c.SecretAccessKey)
}

func (m *Moto) creds() Credentials {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.admin.AccessKeyID != "" {
		return m.admin
	}
	return Credentials{DummyAccessKeyID, DummySecretKey}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	if over := len(b.b) - b.max; over > 0 {
		b.b = append(b.b[:0], b.b[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

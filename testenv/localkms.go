package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// The emulator's account and region, and the dummy credentials its clients sign with
// (it checks no signature).
const (
	LocalKMSRegion    = "eu-west-2"
	LocalKMSAccount   = "111122223333"
	DummyAccessKeyID  = "AKIDPROVENANCEDTEST"
	DummySecretKey    = "provenanced-test-secret-never-shown"
	localKMSStartWait = 30 * time.Second
)

// AWSTestEnv is the environment under which tests use the AWS SDK's standard chain:
// the dummy credentials, no region (tests set one where they mean to), no profile, no
// shared files from ~/.aws, no endpoint overrides and no instance metadata service, so
// that nothing leaves 127.0.0.1 and nothing depends on the machine's own AWS setup.
// A TestMain applies it with os.Setenv before the tests run.
var AWSTestEnv = map[string]string{
	"AWS_ACCESS_KEY_ID":                      DummyAccessKeyID,
	"AWS_SECRET_ACCESS_KEY":                  DummySecretKey,
	"AWS_SESSION_TOKEN":                      "",
	"AWS_PROFILE":                            "",
	"AWS_DEFAULT_PROFILE":                    "",
	"AWS_REGION":                             "",
	"AWS_DEFAULT_REGION":                     "",
	"AWS_CONFIG_FILE":                        filepath.Join(os.TempDir(), "provenanced-test-no-aws-config"),
	"AWS_SHARED_CREDENTIALS_FILE":            filepath.Join(os.TempDir(), "provenanced-test-no-aws-credentials"),
	"AWS_ROLE_ARN":                           "",
	"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
	"AWS_ENDPOINT_URL":                       "",
	"AWS_ENDPOINT_URL_KMS":                   "",
	"AWS_ENDPOINT_URL_S3":                    "",
	"AWS_MAX_ATTEMPTS":                       "",
	"AWS_RETRY_MODE":                         "",
	"AWS_EC2_METADATA_DISABLED":              "true",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
}

// SetAWSTestEnv applies AWSTestEnv to the process environment.
func SetAWSTestEnv() {
	for k, v := range AWSTestEnv {
		if v == "" {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, v)
		}
	}
}

var localKMSBin struct {
	once sync.Once
	path string
	err  error
}

// localKMSBinary is the emulator's binary at the version go.mod pins, built once per
// process. LOCAL_KMS names another binary instead.
func localKMSBinary() (string, error) {
	localKMSBin.once.Do(func() {
		if p := os.Getenv("LOCAL_KMS"); p != "" {
			localKMSBin.path = p
			return
		}
		// `go tool -n` builds the tool declared in go.mod into the build cache (once,
		// then reused) and prints its path rather than running it.
		out, err := exec.Command("go", "tool", "-n", "local-kms").Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				err = fmt.Errorf("%v: %s", err, ee.Stderr)
			}
			localKMSBin.err = fmt.Errorf("testenv: cannot build local-kms (go tool -n local-kms): %w", err)
			return
		}
		localKMSBin.path = strings.TrimSpace(string(out))
	})
	return localKMSBin.path, localKMSBin.err
}

// LocalKMS is a local-kms process (github.com/nsmithuk/local-kms, a KMS emulator)
// serving on a loopback port with a data folder of its own.
//
// The emulator binds every interface and has no option against that; tests only ever
// talk to it on 127.0.0.1. It logs every request, so its output goes to LogPath rather
// than to the test log.
type LocalKMS struct {
	bin     string
	dataDir string
	LogPath string
	port    int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}

	kmsAdmin
}

var startedOn = regexp.MustCompile(`Local KMS started on [0-9.]+:([0-9]+)`)

// StartLocalKMS starts an emulator and stops it when the test ends.
func StartLocalKMS(t TB) *LocalKMS {
	t.Helper()
	bin, err := localKMSBinary()
	if err != nil {
		t.Fatalf("%v", err)
	}
	dir := t.TempDir()
	k := &LocalKMS{bin: bin, dataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "local-kms.log")}
	k.kmsAdmin = kmsAdmin{k.Client}
	t.Cleanup(k.Stop)
	// Port 0: the emulator takes a free port and logs it, which leaves no window in
	// which another process could take a port chosen for it.
	if err := k.start(0); err != nil {
		t.Fatalf("%v", err)
	}
	return k
}

func (k *LocalKMS) start(port int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(k.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	before, _ := logf.Seek(0, 2)
	cmd := exec.Command(k.bin)
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("PORT=%d", port),
		"KMS_DATA_PATH="+k.dataDir,
		"KMS_SEED_PATH="+filepath.Join(k.dataDir, "no-seed.yaml"),
		"KMS_REGION="+LocalKMSRegion,
		"KMS_ACCOUNT_ID="+LocalKMSAccount,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: starting local-kms: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	k.cmd, k.done = cmd, done

	deadline := time.Now().Add(localKMSStartWait)
	for {
		if port == 0 {
			if data, err := os.ReadFile(k.LogPath); err == nil && int64(len(data)) > before {
				if m := startedOn.FindSubmatch(data[before:]); m != nil {
					fmt.Sscanf(string(m[1]), "%d", &port)
				}
			}
		}
		if port != 0 {
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
				c.Close()
				k.port = port
				return nil
			}
		}
		select {
		case <-done:
			k.cmd = nil
			return fmt.Errorf("testenv: local-kms exited at start; see %s", k.LogPath)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			k.stopLocked()
			return fmt.Errorf("testenv: local-kms did not answer within %v; see %s", localKMSStartWait, k.LogPath)
		}
	}
}

// Pid is the running emulator's process id, or 0 when it is stopped.
func (k *LocalKMS) Pid() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

// Endpoint is the emulator's URL on the loopback interface.
func (k *LocalKMS) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", k.port) }

// Stop kills the emulator (as a crash or an outage would end it) and waits for it.
// Its data stays for Restart.
func (k *LocalKMS) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopLocked()
}

func (k *LocalKMS) stopLocked() {
	if k.cmd == nil {
		return
	}
	k.cmd.Process.Kill()
	<-k.done
	k.cmd, k.done = nil, nil
}

// Restart starts the emulator again on the same port with the same data, after Stop.
func (k *LocalKMS) Restart(t TB) {
	t.Helper()
	if err := k.start(k.port); err != nil {
		t.Fatalf("%v", err)
	}
}

// Client is an SDK client of the emulator with the dummy credentials, independent of
// the process environment.
func (k *LocalKMS) Client() *kms.Client {
	return staticClient(k.Endpoint(), DummyAccessKeyID, DummySecretKey)
}

// Name is "local-kms".
func (k *LocalKMS) Name() string { return "local-kms" }

// Quirks: none that the tests meet; it checks no credentials, though.
func (k *LocalKMS) Quirks() KMSQuirks { return KMSQuirks{} }

// KMSConfig is a config with a Unix socket p.sock in dir, no TCP listener, and one key,
// [keys.signing]: the KMS key keyID at endpoint, in LocalKMSRegion. When bundle is not
// nil it is written to bundle.pem in dir, the key's certificates. Change it with Table (a
// nil value removes a key) and Load it from dir.
func KMSConfig(t TB, dir string, bundle []byte, keyID, endpoint string) *Config {
	t.Helper()
	c := NewConfig().
		Table("server", "socket", filepath.Join(dir, "p.sock"), "http", "").
		Table("keys.signing", "backend", "awskms")
	if bundle != nil {
		if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), bundle, 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		c.Table("keys.signing", "certificates", "bundle.pem")
	}
	return c.Table("keys.signing", "key_id", keyID, "region", LocalKMSRegion, "endpoint", endpoint)
}

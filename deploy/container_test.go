package deploy

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/internal/devsetup"
	"github.com/ib1/provenanced/testenv"
)

// No container engine runs where these tests run, so the image is checked in two halves:
// its Containerfiles are parsed for what the image must have, and the binary is run as
// the image runs it (its user, its working directory, its environment, its health check
// command). Not tested here: that the base images pull, that apt-get succeeds in them,
// and the engine's own handling of USER, HEALTHCHECK and mounts.

// instruction is one Containerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

func parseContainerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// finalStage is the instructions from the last FROM on.
func finalStage(ins []instruction) []instruction {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i].cmd == "FROM" {
			return ins[i:]
		}
	}
	return nil
}

func find(ins []instruction, cmd string) []string {
	var out []string
	for _, in := range ins {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// A fully qualified image names its registry (a host with a dot or a port) and a tag
// other than latest.
var qualifiedImage = regexp.MustCompile(`^[a-z0-9-]+(\.[a-z0-9-]+)+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9._-]+(@sha256:[0-9a-f]{64})?$`)

func TestContainerfile(t *testing.T) {
	ins := parseContainerfile(t, "container/Containerfile")
	for _, from := range find(ins, "FROM") {
		image := strings.Fields(from)[0]
		if !qualifiedImage.MatchString(image) || strings.HasSuffix(image, ":latest") {
			t.Errorf("FROM %s: name the registry and a version tag (docker.io/library/debian:12.11-slim)", image)
		}
	}
	final := finalStage(ins)

	// Version and revision are stamped at build time.
	build := strings.Join(find(ins, "RUN"), "\n")
	for _, want := range []string{"-X main.version=${VERSION}", "-X github.com/ib1/provenanced/daemon.Revision=${REVISION}"} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build does not stamp %s", want)
		}
	}

	// OCI labels.
	labels := strings.Join(find(final, "LABEL"), " ")
	for _, l := range []string{"title", "description", "source", "version", "revision"} {
		if !strings.Contains(labels, "org.opencontainers.image."+l+"=") {
			t.Errorf("no label org.opencontainers.image.%s", l)
		}
	}
	if !strings.Contains(labels, `org.opencontainers.image.version="${VERSION}"`) {
		t.Errorf("the version label is not the build's VERSION: %s", labels)
	}

	// A numeric, non-root user that owns /app, the working directory.
	users := find(final, "USER")
	if len(users) == 0 {
		t.Fatal("the image runs as root: no USER")
	}
	uid, gid := imageUser(t, users[len(users)-1])
	if wd := find(final, "WORKDIR"); len(wd) == 0 || wd[len(wd)-1] != "/app" {
		t.Errorf("WORKDIR is %v, want /app", wd)
	}
	owns := regexp.MustCompile(`install -d -o (\d+) -g (\d+) -m 0755 /app`).FindStringSubmatch(strings.Join(find(final, "RUN"), "\n"))
	if owns == nil || owns[1] != strconv.Itoa(uid) || owns[2] != strconv.Itoa(gid) {
		t.Errorf("/app is not created owned by the image's user %d:%d (found %v)", uid, gid, owns)
	}

	// The health check asks for readiness.
	hc := healthCheck(t, final)
	if strings.Join(hc, " ") != "/usr/local/bin/provenanced health -ready -timeout 4s" {
		t.Errorf("HEALTHCHECK runs %q", hc)
	}
	if ep := find(final, "ENTRYPOINT"); len(ep) != 1 || ep[0] != `["/usr/local/bin/provenanced"]` {
		t.Errorf("ENTRYPOINT %v", ep)
	}
}

// imageUser parses USER uid:gid, which must be numeric (runAsNonRoot checks only numbers)
// and not root.
func imageUser(t *testing.T, user string) (int, int) {
	t.Helper()
	u, g, _ := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if err1 != nil || err2 != nil || uid == 0 || gid == 0 {
		t.Fatalf("USER %s: want a numeric uid:gid other than root", user)
	}
	return uid, gid
}

// healthCheck is the HEALTHCHECK's command, in exec form.
func healthCheck(t *testing.T, final []instruction) []string {
	t.Helper()
	hcs := find(final, "HEALTHCHECK")
	if len(hcs) != 1 {
		t.Fatalf("want one HEALTHCHECK, got %v", hcs)
	}
	_, cmd, ok := strings.Cut(hcs[0], " CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK without CMD: %s", hcs[0])
	}
	var argv []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(cmd, -1) {
		argv = append(argv, m[1])
	}
	if !strings.HasPrefix(strings.TrimSpace(cmd), "[") || len(argv) == 0 {
		t.Fatalf("HEALTHCHECK CMD is not in exec form: %s", cmd)
	}
	return argv
}

// imageEnv is the final stage's ENV, as KEY=VALUE.
func imageEnv(final []instruction) []string {
	var env []string
	for _, e := range find(final, "ENV") {
		env = append(env, strings.Fields(e)...)
	}
	return env
}

func TestContainerfilePKCS11(t *testing.T) {
	ins := parseContainerfile(t, "container/Containerfile.pkcs11")
	from := find(ins, "FROM")
	if len(from) != 1 || from[0] != "${BASE}" {
		t.Errorf("FROM %v: the example builds on the provenanced image (ARG BASE)", from)
	}
	run := strings.Join(find(ins, "RUN"), "\n")
	for _, pkg := range []string{"p11-kit-modules", "opensc-pkcs11"} {
		if !strings.Contains(run, pkg) {
			t.Errorf("the example does not install %s", pkg)
		}
	}
	users := find(ins, "USER")
	if len(users) == 0 {
		t.Fatal("no USER")
	}
	base := parseContainerfile(t, "container/Containerfile")
	bu := find(finalStage(base), "USER")
	if users[len(users)-1] != bu[len(bu)-1] {
		t.Errorf("the example ends as USER %s, the base image as %s: it must not leave the daemon root", users[len(users)-1], bu[len(bu)-1])
	}
}

// ignoreRules is a .containerignore, as buildah and docker read it: the last pattern
// that matches a path, or one of its parent folders, decides; "!" takes a path back in.
type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

func loadIgnore(t *testing.T, path string) []ignoreRule {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules []ignoreRule
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		r := ignoreRule{}
		if line[0] == '!' {
			r.negate, line = true, line[1:]
		}
		line = strings.TrimPrefix(filepath.Clean(line), "/")
		var b strings.Builder
		b.WriteString("^")
		for i, part := range strings.Split(line, "/") {
			if i > 0 {
				b.WriteString("/")
			}
			if part == "**" {
				b.WriteString(".*")
				continue
			}
			for _, c := range part {
				switch c {
				case '*':
					b.WriteString("[^/]*")
				case '?':
					b.WriteString("[^/]")
				default:
					b.WriteString(regexp.QuoteMeta(string(c)))
				}
			}
		}
		b.WriteString("$")
		r.re = regexp.MustCompile(strings.ReplaceAll(b.String(), ".*/", "(.*/)?"))
		rules = append(rules, r)
	}
	return rules
}

func ignored(rules []ignoreRule, path string) bool {
	out := false
	// A path is excluded when it or any parent matches.
	parts := strings.Split(path, "/")
	for _, r := range rules {
		for i := 1; i <= len(parts); i++ {
			if r.re.MatchString(strings.Join(parts[:i], "/")) {
				out = !r.negate
				break
			}
		}
	}
	return out
}

// The build context holds every file the build needs and none of the files that could
// hold a secret or a stale binary.
func TestContainerignore(t *testing.T) {
	rules := loadIgnore(t, "../.containerignore")
	if target, err := os.Readlink("../.dockerignore"); err != nil || target != ".containerignore" {
		t.Errorf(".dockerignore should link to .containerignore: %v %q", err, target)
	}
	for _, p := range []string{".git/HEAD", ".git", ".dev/signing-key.pem", ".testenv/softhsm2.conf", "bin/provenanced",
		"provenanced", "cmd/provenanced/provenanced", "certs/my-key.pem", ".env", "certs/.env", "x/hsm.pin",
		"daemon/daemon.test", "cpu.prof", "bench/run.tmp"} {
		if !ignored(rules, p) {
			t.Errorf("%s would be sent to the build", p)
		}
	}
	// What the build reads: go.mod, go.sum and the Go and embedded files of every package
	// of this module that the binary is built from.
	needed := []string{"go.mod", "go.sum"}
	out, err := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}|{{join .GoFiles ","}},{{join .CgoFiles ","}},{{join .EmbedFiles ","}}{{end}}{{end}}`, "../cmd/provenanced").Output()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("..")
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dir, files, _ := strings.Cut(line, "|")
		rel, _ := filepath.Rel(root, dir)
		for _, f := range strings.Split(files, ",") {
			if f != "" {
				needed = append(needed, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, p := range needed {
		if ignored(rules, p) {
			t.Errorf("%s is needed by the build but excluded from its context", p)
		}
	}
}

// runAs runs the binary as uid:gid in dir with env, as a container engine would start
// the image's process.
func runAs(uid, gid int, dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(daemonBin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/app"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		// CI runs as root; a developer's run cannot switch users.
		t.Skip("runs the binary as other users: needs root (CI runs as root)")
	}
}

// scratchDir is a folder every user can enter, as / is in an image.
func scratchDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "provenanced-image-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// imageRuntime is the image's user and environment, read from the Containerfile, with the
// listener moved from 0.0.0.0:8080 to a free loopback port.
func imageRuntime(t *testing.T) (uid, gid int, env []string, health []string, addr string) {
	t.Helper()
	final := finalStage(parseContainerfile(t, "container/Containerfile"))
	users := find(final, "USER")
	uid, gid = imageUser(t, users[len(users)-1])
	addr, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range imageEnv(final) {
		switch {
		case e == "PROVENANCED_HTTP=0.0.0.0:8080":
			e = "PROVENANCED_HTTP=" + addr
		case e == "PROVENANCED_URL=http://127.0.0.1:8080":
			e = "PROVENANCED_URL=http://" + addr
		}
		env = append(env, e)
	}
	if len(env) != 2 {
		t.Fatalf("the image's ENV changed (%v): update this test", env)
	}
	return uid, gid, env, healthCheck(t, final), addr
}

// waitHealthy runs the image's health check command until it passes.
func waitHealthy(t *testing.T, uid, gid int, dir string, env, health []string, daemon *exec.Cmd, stderr *strings.Builder) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		hc := runAs(uid, gid, dir, env, health[1:]...)
		out, err := hc.CombinedOutput()
		if err == nil {
			return
		}
		if daemon.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("the health check never passed: %v %s\ndaemon:\n%s", err, out, stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// syncWriter lets the daemon's stderr be read while it is written.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func loadKeyPub(t *testing.T, path string) *ecdsa.PublicKey {
	t.Helper()
	k, err := pem.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

// startAs starts the daemon and stops it when the test ends.
func startAs(t *testing.T, cmd *exec.Cmd) *strings.Builder {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &syncWriter{b: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &stderr
}

// The image's user can run `serve -dev` in /app, and the HEALTHCHECK command passes
// against it. With /app owned by root, as before, the same run fails.
func TestImageDevServe(t *testing.T) {
	requireRoot(t)
	uid, gid, env, health, _ := imageRuntime(t)
	root := scratchDir(t)
	app := filepath.Join(root, "app")
	// As the Containerfile's RUN makes it: install -d -o UID -g GID -m 0755 /app
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(app, uid, gid)
	cmd := runAs(uid, gid, app, env, "serve", "-dev", "dev")
	stderr := startAs(t, cmd)
	waitHealthy(t, uid, gid, app, env, health, cmd, stderr)
	if st, err := os.Stat(filepath.Join(app, "dev", "signing-key.pem")); err != nil || st.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
		t.Errorf("the development key was not written by the image's user: %v", err)
	}

	// The control: /app owned by root.
	rootApp := filepath.Join(root, "rootapp")
	os.Mkdir(rootApp, 0o755)
	out, err := runAs(uid, gid, rootApp, env, "serve", "-dev", "dev").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Errorf("serve -dev in a root-owned /app: %v\n%s", err, out)
	}
}

// The original service's migration command mounts the host's certs folder, whose key is
// the host user's, mode 0600:
//
//	docker run -v $(pwd)/certs:/app/certs -p 8080:8080 --env-file=.env provenanced
//
// As the image's user the key cannot be read, and the error says what to do; with
// --user set to the key's owner (docker run --user "$(id -u):$(id -g)", or podman's
// --userns=keep-id) the daemon serves and signs. The key's mode is never widened.
func TestImageHostOwnedKey(t *testing.T) {
	requireRoot(t)
	uid, gid, env, health, addr := imageRuntime(t)
	const hostUID, hostGID = 1000, 1000 // the host user who owns certs/
	root := scratchDir(t)
	app := filepath.Join(root, "app")
	os.Mkdir(app, 0o755)
	os.Chown(app, uid, gid)
	certs := filepath.Join(app, "certs") // the bind mount: the host's files, the host's owner
	_, files, err := devsetup.NewDevFiles(certs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	filepath.Walk(certs, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, hostUID, hostGID) })
	os.Chmod(certs, 0o755)
	if st, _ := os.Stat(files.PrivateKey); st.Mode().Perm() != 0o600 {
		t.Fatalf("the key's mode is %04o", st.Mode().Perm())
	}
	// --env-file=.env: the original's variables, paths relative to /app.
	env = append(env,
		"ROOT_CA_CERTIFICATE=./certs/root-ca.pem",
		"SIGNING_BUNDLE=./certs/signing-bundle.pem",
		"SIGNING_KEY=./certs/signing-key.pem",
		"PROVENANCED_SOCKET=off")

	// As the image's user: refused, with the fix in the message.
	out, err := runAs(uid, gid, app, env, "serve").CombinedOutput()
	if err == nil {
		t.Fatalf("the image's user read a key it does not own:\n%s", out)
	}
	for _, want := range []string{"permission denied", fmt.Sprintf("uid %d", hostUID), fmt.Sprintf("--user %d", hostUID), "--userns=keep-id"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the error does not say %q:\n%s", want, out)
		}
	}

	// With --user set to the key's owner.
	cmd := runAs(hostUID, hostGID, app, env, "serve")
	stderr := startAs(t, cmd)
	waitHealthy(t, hostUID, hostGID, app, env, health, cmd, stderr)
	digest := sha256.Sum256([]byte("from the container"))
	sigOut, err := runAs(hostUID, hostGID, app, env, "sign", "-url", "http://"+addr, "-key", "signing", "-digest", fmt.Sprintf("%x", digest)).Output()
	if err != nil {
		t.Fatalf("sign: %v\ndaemon:\n%s", err, stderr.String())
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigOut)))
	if err != nil {
		t.Fatal(err)
	}
	key := loadKeyPub(t, files.PrivateKey)
	if !ecdsa.VerifyASN1(key, digest[:], sig) {
		t.Error("the signature does not verify with the mounted key")
	}
	if st, _ := os.Stat(files.PrivateKey); st.Mode().Perm() != 0o600 {
		t.Errorf("the key's mode changed to %04o", st.Mode().Perm())
	}
}

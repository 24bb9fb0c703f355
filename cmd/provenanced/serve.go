package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/ib1/provenanced/conf"
	"github.com/ib1/provenanced/daemon"
	"github.com/ib1/provenanced/internal/devsetup"
)

func init() {
	register("serve", "run the daemon (-config FILE, or -dev DIR for a development setup)", serve)
}

func serve(args []string, stdout, stderr io.Writer) error {
	flags, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	configPath := flags.configPath
	var devHelp func(sock, addr string)
	if flags.devDir != "" {
		if configPath, devHelp, err = prepareDevSetup(flags.devDir, flags.hsm, stderr); err != nil {
			return err
		}
	}
	// SIGHUP reloads; caught from here on, so that one arriving while the keys open is
	// kept for after rather than ending the process (its default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, notes, err := loadServeConfig(configPath)
	if err != nil {
		return err
	}
	if flags.check {
		return checkConfig(cfg, stdout, stderr)
	}
	if devHelp != nil {
		devHelp(cfg.Server.Socket, cfg.Server.HTTP) // the addresses it will really listen on
	}
	// A PKCS#11 module's own stderr output is taken into the log rather than between its
	// lines (see daemon.CaptureNativeStderr).
	stderr, moduleLines, restoreStderr := captureModuleStderr(stderr, cfg)
	log := newLogger(stderr, cfg.Server.LogLevel)
	if moduleLines != nil {
		finish := logModuleOutput(log, moduleLines, restoreStderr)
		defer finish()
	}
	for _, n := range notes {
		log.Warn(n)
	}
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log, Version: versionString(), LogLevel: &logLevel,
		Load: func() (*conf.Config, error) {
			cfg, notes, err := loadServeConfig(configPath)
			for _, n := range notes {
				log.Warn(n)
			}
			return cfg, err
		}})
	if err != nil {
		return err
	}
	go reloadOnSIGHUP(ctx, hup, d, log)
	return d.Serve(ctx)
}

// serveFlags are serve's command line, checked.
type serveFlags struct {
	check      bool
	configPath string // with devDir "" too: the original service's environment
	devDir     string
	hsm        bool
}

func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	fs := newFlags("serve", "[-check] [-config FILE | -dev DIR [-hsm]]", stderr)
	check := fs.Bool("check", false, "check the configuration, open the keys and check their certificates, then exit: 0 if all is well, 2 if not; nothing is served")
	configPath := fs.String("config", "", "the TOML config `file` (default $PROVENANCED_CONFIG; without either, the original service's environment and ./.env)")
	devDir := fs.String("dev", "", "create a development setup (test PKI, PEM key, config) in `dir` if it has none, and serve it")
	hsm := fs.Bool("hsm", false, "with -dev: keep the development key in a SoftHSM token in dir, served by the pkcs11 backend (needs softhsm2 and opensc)")
	if err := parseFlags(fs, args, 0); err != nil {
		return serveFlags{}, err
	}
	f := serveFlags{check: *check, configPath: *configPath, devDir: *devDir, hsm: *hsm}
	if f.hsm && f.devDir == "" {
		return serveFlags{}, usageError("-hsm goes with -dev DIR")
	}
	if f.configPath != "" && f.devDir != "" {
		return serveFlags{}, usageError("-config and -dev exclude each other")
	}
	if f.configPath == "" && f.devDir == "" {
		f.configPath = os.Getenv("PROVENANCED_CONFIG")
	}
	return f, nil
}

// prepareDevSetup creates the development setup in devDir if it has none. It returns the
// setup's config file, and what prints the help about it once the addresses it will
// listen on are known.
func prepareDevSetup(devDir string, hsm bool, stderr io.Writer) (string, func(sock, addr string), error) {
	prepare := daemon.PrepareDev
	if hsm {
		prepare = daemon.PrepareDevHSM
	}
	p, created, err := prepare(devDir)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Dir(p)
	softhsm := daemon.DevSoftHSMConf(dir)
	if softhsm != "" {
		// SoftHSM reads this when the key is opened; the setup's token is there.
		os.Setenv("SOFTHSM2_CONF", softhsm)
	}
	return p, func(sock, addr string) { printDevHelp(stderr, dir, created, softhsm, sock, addr) }, nil
}

// loadServeConfig reads the configuration, at start and again at every reload: the file,
// or without one the original service's environment, with ApplyEnv's overrides. notes
// are warnings for the log.
func loadServeConfig(configPath string) (*conf.Config, []string, error) {
	var cfg *conf.Config
	var notes []string
	var err error
	if configPath != "" {
		cfg, err = conf.Load(configPath)
	} else {
		cfg, notes, err = fromOriginalEnvironment()
	}
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return nil, nil, err
	}
	return cfg, notes, nil
}

// captureModuleStderr takes descriptor 2 for the log when stderr is the process's and a
// key uses a PKCS#11 module, which may write there. It returns the stderr to log to, and
// the module's lines with the function that gives descriptor 2 back (nil and a no-op when
// nothing was taken).
func captureModuleStderr(stderr io.Writer, cfg *conf.Config) (io.Writer, <-chan string, func()) {
	if f, ok := stderr.(*os.File); ok && f == os.Stderr && usesPKCS11(cfg) {
		if out, lines, restore, err := daemon.CaptureNativeStderr(); err == nil {
			return out, lines, restore
		}
	}
	return stderr, nil, func() {}
}

// logModuleOutput logs the module's lines as they come, and returns what to do on the way
// out: the real stderr goes back to descriptor 2, where a failed start's error is printed,
// once the module's last lines are logged.
func logModuleOutput(log *slog.Logger, lines <-chan string, restore func()) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for line := range lines {
			log.Warn("PKCS#11 module output", "line", line)
		}
	}()
	return func() {
		restore()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
}

// reloadOnSIGHUP reloads the daemon's configuration at each SIGHUP until ctx ends.
func reloadOnSIGHUP(ctx context.Context, hup <-chan os.Signal, d *daemon.Daemon, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading the configuration")
			d.Reload(ctx) // logs its outcome
		}
	}
}

func usesPKCS11(cfg *conf.Config) bool {
	for _, k := range cfg.Keys {
		if k.Backend == "pkcs11" {
			return true
		}
	}
	return false
}

// checkConfig is `serve -check`: every check serve makes before it listens, then
// closed again, nothing served. Any failure is exit status 2, as a config error is.
// A backend's own words on why a key cannot sign go to stderr, as the daemon's log.
// The report says what was checked and no more: a key without a certificate signs
// digests and CSRs, not records.
func checkConfig(cfg *conf.Config, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	report, err := daemon.Check(ctx, cfg, daemon.Options{Version: versionString(), Logger: newLogger(stderr, "warn")})
	if err != nil {
		var ce *conf.Error
		if errors.As(err, &ce) {
			return err
		}
		return &conf.Error{File: cfg.File, Msg: "check failed", Err: err}
	}
	fmt.Fprintf(stdout, "%s: ok\n", cfg.File)
	for _, k := range report.Keys {
		cert := "no certificate: it signs digests and CSRs, not records"
		if c := k.Certificate; c != nil {
			cert = fmt.Sprintf("certificate serial %s valid until %s", c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(stdout, "  key %s (%s): opened, a test signature verified, %s\n", k.Name, k.Backend, cert)
	}
	if s := cfg.Server.Socket; s != "" {
		fmt.Fprintf(stdout, "  socket %s: its folder takes the daemon's socket\n", s)
	}
	for _, l := range [][2]string{{"http", cfg.Server.HTTP}, {"metrics_http", cfg.Server.MetricsHTTP}} {
		if l[1] != "" {
			fmt.Fprintf(stdout, "  %s %s: the daemon may listen there\n", l[0], l[1])
		}
	}
	for _, n := range report.Notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return nil
}

// logLevel is the logger's level, which a reload sets from server.log_level.
var logLevel slog.LevelVar

// tuneGC trades a little memory for CPU, unless the operator has set GOGC or GOMEMLIMIT:
// the daemon's live heap is a few MiB, and with Go's default of collecting at twice that,
// collection would run many times a second under load. At 400 % it runs a fifth as often;
// the soft limit makes it collect earlier should the heap ever approach 48 MiB, which keeps
// the process well under 64 MiB of resident memory.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
}

// fromOriginalEnvironment reads the original service's variables and .env file from the
// working directory, as its `docker run --env-file=.env` setup does.
func fromOriginalEnvironment() (*conf.Config, []string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, nil, err
	}
	src := conf.EnvSource{Getenv: os.Getenv, DotEnv: filepath.Join(wd, ".env"), Dir: wd}
	cfg, dotenv, err := conf.FromEnvironment(src)
	if err != nil {
		var ce *conf.Error
		if errors.As(err, &ce) && ce.Key == conf.EnvRootCA {
			ce.Msg += "; for a development setup: provenanced serve -dev DIR"
		}
		return nil, nil, err
	}
	// The AWS SDK reads credentials and region from the process environment.
	for name, v := range dotenv {
		if strings.HasPrefix(name, "AWS_") && os.Getenv(name) == "" {
			os.Setenv(name, v)
		}
	}
	var notes []string
	if n := conf.IgnoredSigningKey(cfg, src, dotenv); n != "" {
		notes = append(notes, n)
	}
	return cfg, notes, nil
}

// newLogger logs JSON when stderr is not a terminal (journald, a container runtime,
// a file); text for a person at a terminal. Each line is written as it is logged.
func newLogger(w io.Writer, level string) *slog.Logger {
	logLevel.UnmarshalText([]byte(level)) // conf has checked it
	opts := &slog.HandlerOptions{Level: &logLevel}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// selfCommand is how to run this binary again from the same folder: the path it was
// started by (bin/provenanced under make run), or plain provenanced when it was found on
// $PATH. A newcomer who has installed nothing can paste the help's commands as printed.
func selfCommand() string {
	if strings.Contains(os.Args[0], "/") {
		return os.Args[0]
	}
	return "provenanced"
}

func printDevHelp(w io.Writer, dir string, created bool, softhsm, sock, addr string) {
	self := selfCommand()
	what := "using the existing development setup"
	if created {
		what = "created a development setup (test PKI, P-256 key, config)"
		if softhsm != "" {
			what = "created a development setup (test PKI, P-256 key in a SoftHSM token, config)"
		}
	}
	defer func() {
		if softhsm == "" {
			return
		}
		fmt.Fprintf(w, `The key is in SoftHSM token "provenance" (key label "signing"), PIN in %s.
To look at the token, or to run the daemon on this config yourself:
  export SOFTHSM2_CONF=%s
  pkcs11-tool --module %s --token-label provenance --login --pin "$(cat %s)" --list-objects
  %s serve -config %s

`, filepath.Join(dir, "user.pin"), softhsm, softHSMModule(), filepath.Join(dir, "user.pin"), self, filepath.Join(dir, daemon.DevConfigName))
	}()
	// Either listener may be off (PROVENANCED_SOCKET=off, PROVENANCED_HTTP=off): show
	// only what answers.
	var listens, tries []string
	target, sign := "http://"+addr, "-url http://"+addr // what curl and sign address
	if sock != "" {
		listens = append(listens, sock)
		tries = append(tries, "  curl -s --unix-socket "+sock+" http://localhost/v1/keys\n")
		sign = "-socket " + sock
		if addr == "" {
			target = "--unix-socket " + sock + " http://localhost"
		}
	}
	if addr != "" {
		listens = append(listens, "http://"+addr)
	}
	tries = append(tries,
		"  curl -s "+target+"/v1/keys/signing\n",
		"  curl -s -H 'Content-Type: application/json' -d '{\"message\":\"aGVsbG8=\"}' "+target+"/v1/keys/signing/sign\n",
		"  "+self+" sign "+sign+" -key signing -digest $(printf hello | sha256sum | cut -d' ' -f1)\n")
	fmt.Fprintf(w, "provenanced: %s in %s\n  config:   %s\n  root CA:  %s\n  listens:  %s\n\nTry it from another terminal:\n%s\n",
		what, dir, filepath.Join(dir, daemon.DevConfigName), filepath.Join(dir, "root-ca.pem"),
		strings.Join(listens, " and "), strings.Join(tries, ""))
}

func softHSMModule() string {
	if m, err := devsetup.FindSoftHSM(); err == nil {
		return m
	}
	return "/usr/lib/softhsm/libsofthsm2.so"
}

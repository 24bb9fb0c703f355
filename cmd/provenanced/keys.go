package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/ib1/provenanced/client"
)

func init() {
	register("keys", "list the daemon's keys", keysCmd)
	register("sign", "ask the daemon for a signature", signCmd)
}

// daemonFlags are the flags that say where the daemon is and how to talk to it.
type daemonFlags struct {
	socket, url, tokenFile *string
	// ca, cert and certKey reach a TCP listener with tls_cert (and tls_client_ca). The
	// client's key is -cert-key, not -key: sign's -key names the daemon's key.
	ca, cert, certKey *string
	timeout           *time.Duration
	target            *string // what client() connected to, for connection errors
}

func addDaemonFlags(fs *flag.FlagSet) daemonFlags {
	return daemonFlags{
		socket:    fs.String("socket", "", "the daemon's Unix `socket` (default $PROVENANCED_SOCKET)"),
		url:       fs.String("url", "", "the daemon's base `URL`, such as http://127.0.0.1:8080 or https://10.0.0.5:8443 (default $PROVENANCED_URL)"),
		timeout:   fs.Duration("timeout", 30*time.Second, "give up after this long"),
		tokenFile: fs.String("token-file", "", "send the bearer token in this `file` (mode 0600) as the daemon's [clients.NAME] asks (default $PROVENANCED_TOKEN_FILE)"),
		ca:        fs.String("ca", "", "for an https:// URL: trust the daemon's certificate if it chains to a CA in this PEM `file` (default $PROVENANCED_CA; without either, the system's CAs)"),
		cert:      fs.String("cert", "", "for an https:// URL: present this client certificate (PEM `file`; its key too, unless -cert-key), for a daemon with tls_client_ca (default $PROVENANCED_CERT)"),
		certKey:   fs.String("cert-key", "", "the private key of -cert (PEM `file`) when -cert holds the certificate alone (default $PROVENANCED_CERT_KEY)"),
		target:    new(string),
	}
}

// tlsConfig is the client's TLS configuration from -ca, -cert and -cert-key (or their
// variables): nil when none is given. They make sense only for an https:// URL; as flags
// for a socket or http:// they are a mistake rather than ignored, since a user who gives
// them expects TLS.
func (f daemonFlags) tlsConfig(url string) (*tls.Config, error) {
	https := strings.HasPrefix(strings.ToLower(url), "https://")
	if !https && (*f.ca != "" || *f.cert != "" || *f.certKey != "") {
		return nil, usageError("-ca, -cert and -cert-key are for an https:// URL (-url https://HOST:PORT); the socket and http:// do not use TLS")
	}
	// The variables may be set for every command of a pod or a shell: a command that
	// reaches the daemon on its socket or over http:// does not use them.
	ca, cert, key := flagOrEnv(*f.ca, "PROVENANCED_CA"), flagOrEnv(*f.cert, "PROVENANCED_CERT"), flagOrEnv(*f.certKey, "PROVENANCED_CERT_KEY")
	if !https || ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		data, err := os.ReadFile(ca)
		if err != nil {
			return nil, usageError(fmt.Sprintf("-ca: %v", err))
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(data) {
			return nil, usageError(fmt.Sprintf("-ca: %s holds no PEM certificate", ca))
		}
	}
	switch {
	case cert == "" && key != "":
		return nil, usageError("-cert-key goes with -cert")
	case cert != "":
		if key == "" {
			key = cert
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, usageError(fmt.Sprintf("-cert %s with its key in %s: %v", cert, key, err))
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

func flagOrEnv(flagValue, env string) string {
	if flagValue != "" {
		return flagValue
	}
	return os.Getenv(env)
}

// explain turns an error of reaching the daemon into one that says what to do: the
// bare "dial unix ...: connect: no such file or directory" leaves a user guessing
// whether the daemon, the path or their rights are wrong. Other errors pass unchanged.
func (f daemonFlags) explain(err error) error {
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || oe.Op != "dial" {
		return err
	}
	where, isSocket := *f.target, !strings.Contains(*f.target, "://")
	how := "give the daemon's address with -url URL (or PROVENANCED_URL)"
	if isSocket {
		how = "give the daemon's socket with -socket PATH (or PROVENANCED_SOCKET)"
	}
	const start = "start the daemon with: provenanced serve -config FILE"
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("cannot reach the daemon: no socket at %s; is the daemon running? %s ([server] socket names the path), or %s", where, start, how)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot reach the daemon: permission denied on %s; the socket admits its owner and group ([server] socket_mode): run as a member of the daemon's group (such as provenanced), or %s", where, how)
	case errors.Is(err, syscall.ECONNREFUSED):
		if isSocket {
			return fmt.Errorf("cannot reach the daemon: nothing listens on %s (a socket file left by a daemon that stopped?); %s, or %s", where, start, how)
		}
		return fmt.Errorf("cannot reach the daemon: nothing listens at %s; %s ([server] http names the address), or %s", where, start, how)
	}
	return fmt.Errorf("cannot reach the daemon at %s: %w; %s", where, err, how)
}

func (f daemonFlags) client() (*client.Client, context.Context, context.CancelFunc, error) {
	socket, url := *f.socket, *f.url
	if socket == "" && url == "" {
		socket, url = os.Getenv("PROVENANCED_SOCKET"), os.Getenv("PROVENANCED_URL")
		if socket == "off" { // the daemon's setting for "no socket" is no place to look
			socket = ""
		}
		if socket != "" && url != "" {
			url = ""
		}
	}
	if socket == "" && url == "" {
		return nil, nil, nil, usageError("where is the daemon? give -socket PATH or -url URL (or set PROVENANCED_SOCKET or PROVENANCED_URL)")
	}
	if socket != "" && url != "" {
		return nil, nil, nil, usageError("-socket and -url exclude each other")
	}
	opts := client.Options{Socket: socket, URL: url}
	tc, err := f.tlsConfig(url)
	if err != nil {
		return nil, nil, nil, err
	}
	opts.TLSConfig = tc
	tokenFile := *f.tokenFile
	if tokenFile == "" {
		tokenFile = os.Getenv("PROVENANCED_TOKEN_FILE")
	}
	if tokenFile != "" {
		tok, err := client.ReadTokenFile(tokenFile)
		if err != nil {
			return nil, nil, nil, usageError(err.Error())
		}
		opts.Token = tok
	}
	c, err := client.New(opts)
	if err != nil {
		return nil, nil, nil, usageError(err.Error())
	}
	*f.target = socket + url
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	return c, ctx, cancel, nil
}

// connect parses the flags of a command that only talks to the daemon, and connects.
func (f daemonFlags) connect(fs *flag.FlagSet, args []string) (*client.Client, context.Context, context.CancelFunc, error) {
	if err := parseFlags(fs, args, 0); err != nil {
		return nil, nil, nil, err
	}
	return f.client()
}

func keysCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys", "[-socket S | -url U [-ca F] [-cert F [-cert-key F]]] [-json]", stderr)
	df := addDaemonFlags(fs)
	asJSON := fs.Bool("json", false, "print the daemon's JSON")
	c, ctx, cancel, err := df.connect(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	keys, err := c.Keys(ctx)
	if err != nil {
		return df.explain(err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"keys": keys})
	}
	for _, k := range keys {
		serial, notAfter := k.Serial, k.NotAfter
		if serial == "" {
			serial, notAfter = "-", "(no certificate)"
		}
		fmt.Fprintf(stdout, "%-16s %-8s %s serial %s expires %s\n", k.Name, k.Backend, k.Algorithm, serial, notAfter)
	}
	return nil
}

func signCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sign", "-key NAME (-digest HEX | -in FILE) [-socket S | -url U [-ca F] [-cert F [-cert-key F]]] [-out FILE]", stderr)
	df := addDaemonFlags(fs)
	key := fs.String("key", "", "the key's `name`")
	digestHex := fs.String("digest", "", "a SHA-256 digest in `hex` (64 characters)")
	in := fs.String("in", "", "a `file` to hash with SHA-256 and sign (- for standard input)")
	out := fs.String("out", "", "write the DER signature to this `file` instead of printing it in base64")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *key == "" {
		return usageError("-key is required")
	}
	if (*digestHex == "") == (*in == "") {
		return usageError("give exactly one of -digest HEX and -in FILE")
	}
	var digest []byte
	if *digestHex != "" {
		d, err := hex.DecodeString(strings.TrimSpace(*digestHex))
		if err != nil || len(d) != sha256.Size {
			return usageError("-digest must be 64 hexadecimal characters (a SHA-256 digest)")
		}
		digest = d
	} else {
		h := sha256.New()
		var r io.Reader = os.Stdin
		if *in != "-" {
			f, err := os.Open(*in)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		if _, err := io.Copy(h, r); err != nil {
			return err
		}
		digest = h.Sum(nil)
	}
	c, ctx, cancel, err := df.client()
	if err != nil {
		return err
	}
	defer cancel()
	sig, err := c.SignDigest(ctx, *key, digest)
	if err != nil {
		return df.explain(err)
	}
	if *out != "" {
		return os.WriteFile(*out, sig, 0o644)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(sig))
	return nil
}

func init() {
	register("health", "ask the daemon whether it is alive (or, with -ready, ready): exit status 0 or 1, for probes", healthCmd)
}

// healthCmd is for container probes that cannot reach a listener bound to 127.0.0.1 or
// a Unix socket: an exec probe runs it inside the pod.
func healthCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", "[-ready] [-socket S | -url U [-ca F] [-cert F [-cert-key F]]]", stderr)
	df := addDaemonFlags(fs)
	ready := fs.Bool("ready", false, "ask /readyz (every key can sign, every certificate is valid) rather than /healthz")
	c, ctx, cancel, err := df.connect(fs, args)
	if err != nil {
		return err
	}
	defer cancel()
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	var out json.RawMessage
	if err := c.Do(ctx, "GET", path, nil, &out); err != nil {
		return df.explain(err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}

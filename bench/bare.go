package main

import (
	"errors"
	"flag"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	pembackend "github.com/ib1/provenanced/backends/pem"
	"github.com/ib1/provenanced/testenv"
)

// The bare server (testenv.BareSignHandler on net/http) runs in a process of its own,
// as the daemon does, and is driven by the same load generator.

// bareServer runs the bare server: bench bare-server -key KEY -socket S -http ADDR.
func bareServer(args []string) error {
	fs := flag.NewFlagSet("bare-server", flag.ContinueOnError)
	keyPath := fs.String("key", "", "PEM key")
	socket := fs.String("socket", "", "Unix socket")
	addr := fs.String("http", "", "TCP address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, err := pembackend.LoadKey(*keyPath)
	if err != nil {
		return err
	}
	h := testenv.BareSignHandler(key)
	ul, err := net.Listen("unix", *socket)
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- http.Serve(ul, h) }()
	go func() { errc <- http.Serve(tl, h) }()
	return <-errc
}

type bareProc struct {
	cmd    *exec.Cmd
	socket string
	http   string
}

// startBare runs the bare server in a process of its own, on the PEM key in dir.
func startBare(self, dir string) (*bareProc, error) {
	addr, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	b := &bareProc{socket: filepath.Join(dir, "bare.sock"), http: addr}
	b.cmd = exec.Command(self, "bare-server", "-key", filepath.Join(dir, "signing-key.pem"), "-socket", b.socket, "-http", addr)
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", b.socket); err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, errors.New("the bare server did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *bareProc) stop() {
	b.cmd.Process.Kill()
	b.cmd.Wait()
	os.Remove(b.socket)
}

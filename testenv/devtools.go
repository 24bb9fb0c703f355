package testenv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Browser is a headless Chromium driven over the DevTools protocol, for the pages' tests.
// The protocol is JSON over one WebSocket per page (github.com/coder/websocket: tests
// only, never linked into the daemon).
type Browser struct {
	cmd  *exec.Cmd
	addr string // host:port of the DevTools HTTP endpoint
}

// ChromiumPath is the browser the tests run: $PROVENANCED_CHROMIUM, or chromium (the
// Debian package) on $PATH.
func ChromiumPath() (string, error) {
	if p := os.Getenv("PROVENANCED_CHROMIUM"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		return "", errors.New("testenv: chromium not found: install the Debian package chromium (make deps), or set PROVENANCED_CHROMIUM")
	}
	return p, nil
}

// StartBrowser starts a headless Chromium with a fresh profile, listening for DevTools
// on a loopback port it picks itself; it is stopped (with its child processes) at cleanup.
func StartBrowser(t TB) *Browser {
	t.Helper()
	bin, err := ChromiumPath()
	if err != nil {
		t.Fatalf("%v", err)
	}
	profile := t.TempDir()
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
		"--disable-extensions", "--mute-audio", "--window-size=1400,1000",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "about:blank")
	// Its own process group, so that cleanup stops the renderer and helper processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start chromium: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c := &Browser{cmd: cmd}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	// Chromium writes the port it chose to DevToolsActivePort in the profile.
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if port, _, ok := strings.Cut(string(data), "\n"); err == nil && ok && port != "" {
			c.addr = "127.0.0.1:" + port
			return c
		}
		select {
		case <-done:
			t.Fatalf("testenv: chromium exited before it listened: %s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: chromium did not listen within 30s: %s", stderr.String())
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Page is one browser tab.
type Page struct {
	ws      *wsConn
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpReply
	// Console holds the page's console errors and log entries (Content-Security-Policy
	// violations among them), as "level: text".
	consoleMu sync.Mutex
	console   []string
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// NewPage opens a tab on about:blank.
func (c *Browser) NewPage(t TB) *Page {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+c.addr+"/json/new?about:blank", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testenv: chromium /json/new: %v", err)
	}
	defer resp.Body.Close()
	var target struct {
		WS string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&target); err != nil || target.WS == "" {
		t.Fatalf("testenv: chromium /json/new: %d %v", resp.StatusCode, err)
	}
	ws, err := dialWS(target.WS)
	if err != nil {
		t.Fatalf("testenv: chromium websocket: %v", err)
	}
	p := &Page{ws: ws, pending: map[int64]chan cdpReply{}}
	t.Cleanup(func() { ws.close() })
	go p.read()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []string{"Page.enable", "Runtime.enable", "Log.enable"} {
		if err := p.Call(ctx, m, nil, nil); err != nil {
			t.Fatalf("testenv: %s: %v", m, err)
		}
	}
	return p
}

func (p *Page) read() {
	for {
		msg, err := p.ws.readMessage()
		if err != nil {
			p.mu.Lock()
			for id, ch := range p.pending {
				msg := "connection closed: " + err.Error()
				ch <- cdpReply{Error: &struct {
					Message string `json:"message"`
				}{msg}}
				delete(p.pending, id)
			}
			p.mu.Unlock()
			return
		}
		var m struct {
			ID     int64           `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			cdpReply
		}
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		if m.ID != 0 {
			p.mu.Lock()
			ch := p.pending[m.ID]
			delete(p.pending, m.ID)
			p.mu.Unlock()
			if ch != nil {
				ch <- m.cdpReply
			}
			continue
		}
		p.event(m.Method, m.Params)
	}
}

func (p *Page) event(method string, params json.RawMessage) {
	var line string
	switch method {
	case "Log.entryAdded":
		var e struct {
			Entry struct{ Level, Source, Text string } `json:"entry"`
		}
		json.Unmarshal(params, &e)
		line = e.Entry.Level + " (" + e.Entry.Source + "): " + e.Entry.Text
	case "Runtime.consoleAPICalled":
		var e struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		json.Unmarshal(params, &e)
		var parts []string
		for _, a := range e.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = "console." + e.Type + ": " + strings.Join(parts, " ")
	case "Runtime.exceptionThrown":
		var e struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(params, &e)
		line = "exception: " + e.Details.Text + " " + e.Details.Exception.Description
	default:
		return
	}
	p.consoleMu.Lock()
	p.console = append(p.console, line)
	p.consoleMu.Unlock()
}

// Console returns what the page logged so far.
func (p *Page) Console() []string {
	p.consoleMu.Lock()
	defer p.consoleMu.Unlock()
	return append([]string(nil), p.console...)
}

// Call sends a DevTools command and decodes its result into result (if not nil).
func (p *Page) Call(ctx context.Context, method string, params, result any) error {
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	ch := make(chan cdpReply, 1)
	p.pending[id] = ch
	p.mu.Unlock()
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	if err := p.ws.writeText(msg); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(ctx context.Context, url string) error {
	if err := p.Call(ctx, "Page.navigate", map[string]any{"url": url}, nil); err != nil {
		return err
	}
	return p.WaitFor(ctx, `document.readyState === "complete"`)
}

// Eval evaluates a JavaScript expression in the page (awaiting a promise it returns) and
// decodes its JSON value into result (if not nil).
func (p *Page) Eval(ctx context.Context, expr string, result any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.Call(ctx, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true, "userGesture": true,
	}, &r)
	if err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("evaluate %q: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if result != nil && len(r.Result.Value) > 0 {
		return json.Unmarshal(r.Result.Value, result)
	}
	return nil
}

// WaitFor polls a JavaScript expression until it is true.
func (p *Page) WaitFor(ctx context.Context, expr string) error {
	for {
		var ok bool
		if err := p.Eval(ctx, "!!("+expr+")", &ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SetFiles chooses files for the file input that selector finds, as a user would.
func (p *Page) SetFiles(ctx context.Context, selector string, files ...string) error {
	var doc struct {
		Root struct {
			NodeID int `json:"nodeId"`
		} `json:"root"`
	}
	if err := p.Call(ctx, "DOM.getDocument", nil, &doc); err != nil {
		return err
	}
	var node struct {
		NodeID int `json:"nodeId"`
	}
	if err := p.Call(ctx, "DOM.querySelector", map[string]any{"nodeId": doc.Root.NodeID, "selector": selector}, &node); err != nil {
		return err
	}
	if node.NodeID == 0 {
		return fmt.Errorf("no element %s", selector)
	}
	return p.Call(ctx, "DOM.setFileInputFiles", map[string]any{"nodeId": node.NodeID, "files": files}, nil)
}

// Screenshot writes a PNG of the whole page to file.
func (p *Page) Screenshot(ctx context.Context, file string) error {
	var r struct {
		Data string `json:"data"`
	}
	if err := p.Call(ctx, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(file, png, 0o644)
}

// wsConn is the DevTools connection: one WebSocket, through github.com/coder/websocket.
type wsConn struct {
	c *websocket.Conn
}

func dialWS(rawURL string) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, rawURL, nil)
	if err != nil {
		return nil, err
	}
	// A screenshot comes back as one message of base64 PNG: far above the 32 KiB default.
	c.SetReadLimit(256 << 20)
	return &wsConn{c: c}, nil
}

func (w *wsConn) writeText(p []byte) error {
	return w.c.Write(context.Background(), websocket.MessageText, p)
}

func (w *wsConn) readMessage() ([]byte, error) {
	_, msg, err := w.c.Read(context.Background())
	return msg, err
}

func (w *wsConn) close() error { return w.c.CloseNow() }

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
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/ib1/provenanced/testenv"
)

// The README and every page of docs/ are tested: a reader pastes their command blocks in
// order, so a test does the same, one subtest per page. A fenced block runs only when the
// line before it is a directive, an HTML comment a reader of the rendered page never sees:
//
//	<!-- test -->                           run it; it must exit 0
//	<!-- test: fails -->                    run it; it must exit non-zero
//	<!-- test: background; ready: CMD -->   start it in "a second terminal" and leave it
//	                                        running (make run, serve) until its section ends
//	                                        (a heading of its own level or higher); CMD must
//	                                        succeed within 3 minutes before the next block runs
//	<!-- test: output -->                   the block shows output: each of its lines must
//	                                        appear, in order, in what the block before it
//	                                        printed ("..." stands for any text)
//	<!-- test: file PATH -->                the block is written to PATH (a config file)
//	<!-- not run: WHY -->                   the block cannot run here (systemd, docker, real
//	                                        AWS); a shell block is checked with shellcheck
//
// A shell block (sh, bash, shell, console) without a directive is an error: every command
// a page shows is run, or says why not.
//
// Each page starts afresh: a scratch copy of the repository's tracked files (as a fresh
// clone has them), in a network namespace of its own, so that the pages' addresses
// (127.0.0.1:8080 and the rest) are free whatever else runs on the machine, and nothing
// leaves it. A page of docs/ starts where the README's Install leaves a reader: in the
// clone, with provenanced installed on PATH. /etc/provenanced, /run/provenanced,
// /usr/local/bin and TMPDIR become folders beside the copy.
//
// The blocks of a page run as in one terminal: each in a bash of its own, starting in the
// folder and with the exported variables the block before it left. A background block
// is a second terminal opened in that folder: it gets the folder, not the variables.
//
// When a page has run, every file its blocks left in the copy must be one that git
// ignores, inside a folder that .containerignore keeps out of an image: an example writes
// into a temporary folder of its own, or into an ignored one (.dev, bin).
func TestREADME(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the README test needs root: it runs the blocks in a network namespace (ip netns) of their own")
	}
	for _, tool := range []string{"ip", "make", "curl", "xxd", "shellcheck", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README test needs %s (make deps installs it): %v", tool, err)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(pages)
	pages = append([]string{filepath.Join(root, "README.md")}, pages...)
	if len(pages) < 10 {
		t.Fatalf("only %d pages (README.md and docs/*.md): docs/ was lost?", len(pages))
	}
	tracked := trackedFiles(t, root)
	for _, page := range pages {
		rel, _ := filepath.Rel(root, page)
		t.Run(filepath.Base(page), func(t *testing.T) {
			start := time.Now()
			runPage(t, root, rel, tracked)
			t.Logf("%s: %s", rel, time.Since(start).Round(time.Second))
		})
	}
}

// runPage runs the directed blocks of one page in a fresh scratch copy of the repository.
func runPage(t *testing.T, root, page string, tracked []string) {
	blocks, err := pageBlocks(filepath.Join(root, page))
	if err != nil {
		t.Fatal(err)
	}
	if page == "README.md" && countRun(blocks) < 5 {
		t.Fatalf("only %d README blocks are marked to run; the markers were lost?", countRun(blocks))
	}
	if countRun(blocks) == 0 {
		t.Logf("%s runs no block", page)
		checkNotRun(t, page, blocks)
		return
	}
	s := newSession(t, root, page, tracked)
	t.Cleanup(func() { s.stopBackground(0) })
	for _, b := range blocks {
		if b.heading > 0 {
			s.stopBackground(b.heading)
			s.level = b.heading
			continue
		}
		s.run(t, page, b)
	}
	s.stopBackground(0)
	checkLeftovers(t, root, s.clone, page, tracked)
}

// session is a reader's terminal on a page: the folder it is in and the variables it
// exported, carried from one block to the next through a state file that each block
// sources first and rewrites when it exits; and the second terminals it started.
type session struct {
	clone string   // the scratch copy of the repository: the folder before the first block
	state string   // the state file
	ns    string   // the network namespace
	env   []string // the environment of a new terminal
	subst *strings.Replacer

	level      int // of the heading the blocks are under
	background []running
	lastOutput string // of the last block run, for an output block
	lastLine   int
}

// running is a background block: a second terminal.
type running struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	level  int           // of the heading it was started under
}

// newSession makes the page's scratch folder (the copy, and the folders that stand in for
// /etc/provenanced, /run/provenanced, /usr/local/bin, HOME and TMPDIR beside it) and its
// network namespace.
func newSession(t *testing.T, root, page string, tracked []string) *session {
	base := t.TempDir()
	s := &session{
		clone: filepath.Join(base, "clone"),
		state: filepath.Join(base, "session.sh"),
		ns:    fmt.Sprintf("provdoc%d-%d", os.Getpid(), nsCount.Add(1)),
		subst: strings.NewReplacer(
			"/etc/provenanced", filepath.Join(base, "etc/provenanced"),
			"/run/provenanced", filepath.Join(base, "run/provenanced"),
			"/usr/local/bin", filepath.Join(base, "usr/local/bin"),
		),
		level: 1,
		env: append(os.Environ(),
			"PATH="+filepath.Join(base, "usr/local/bin")+":"+os.Getenv("PATH"),
			"GOFLAGS=-mod=mod", "GOPROXY=off", // everything is in the module cache already; never wait on the network
			"HOME="+filepath.Join(base, "home"),
			"TMPDIR="+filepath.Join(base, "tmp"),
			"GOCACHE="+goEnv(t, "GOCACHE"), "GOMODCACHE="+goEnv(t, "GOMODCACHE"),
			"TERM=dumb",
		),
	}
	copyTracked(t, root, s.clone, tracked)
	for _, d := range []string{"etc/provenanced", "run/provenanced", "usr/local/bin", "home", "tmp"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	os.Chmod(filepath.Join(base, "tmp"), 0o1777)
	if page != "README.md" {
		// A docs page starts with provenanced installed, as the README's Install leaves it.
		installBinary(t, daemonBin, filepath.Join(base, "usr/local/bin/provenanced"))
	}
	if out, err := exec.Command("ip", "netns", "add", s.ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", s.ns).Run() })
	if out, err := exec.Command("ip", "netns", "exec", s.ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up: %v: %s", err, out)
	}
	return s
}

// run runs, writes, checks or lints one block, as its directive says.
func (s *session) run(t *testing.T, page string, b pageBlock) {
	text := s.subst.Replace(b.text)
	where := fmt.Sprintf("%s:%d", page, b.line)
	t.Logf("%s: %s", where, b.kind)
	switch b.kind {
	case "not run":
		if isShell(b.lang) {
			shellcheck(t, where, text)
		}
	case "file":
		p := s.subst.Replace(b.arg)
		if !filepath.IsAbs(p) {
			p = filepath.Join(s.dir(), p)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	case "output":
		if err := matchOutput(text, s.lastOutput); err != nil {
			t.Errorf("%s: the output shown is not what %s:%d printed: %v\nit printed:\n%s", where, page, s.lastLine, err, s.lastOutput)
		}
	case "background":
		shellcheck(t, where, text)
		s.startBackground(t, where, text, s.subst.Replace(b.arg))
	case "run", "fails":
		shellcheck(t, where, text)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := s.command(ctx, text, true).CombinedOutput()
		cancel()
		s.lastOutput, s.lastLine = string(out), b.line
		if b.kind == "run" && err != nil {
			t.Fatalf("%s: %v\n%s\nprinted:\n%s", where, err, text, out)
		}
		if b.kind == "fails" && err == nil {
			t.Fatalf("%s: the page says this fails, and it exited 0:\n%s", where, out)
		}
	}
}

// startBackground starts a background block and waits until ready succeeds.
func (s *session) startBackground(t *testing.T, where, text, ready string) {
	cmd := s.command(context.Background(), text, false)
	out := new(testenv.SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.background = append(s.background, running{cmd, exited, s.level})
	if !s.waitReady(ready, 3*time.Minute, exited) {
		t.Fatalf("%s: not ready (%s); it printed:\n%s", where, ready, out.String())
	}
}

// stopBackground stops what was started under a heading of level or deeper.
func (s *session) stopBackground(level int) {
	var keep, stop []running
	for _, r := range s.background {
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
	s.background = keep
}

// dir is the session's folder now.
func (s *session) dir() string {
	if b, err := os.ReadFile(s.state + ".cwd"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return s.clone
}

// command runs script with bash -euo pipefail in the namespace, in the session's folder,
// as the leader of its own process group so that what it starts can be stopped with it.
// With keep, it starts with the session's exported variables and saves the folder and
// variables it leaves for the next block; without, it is a new terminal in that folder.
func (s *session) command(ctx context.Context, script string, keep bool) *exec.Cmd {
	if keep {
		script = fmt.Sprintf("[ -f %[1]q ] && source %[1]q\n"+
			"trap '__st=$?; export -p > %[1]q; pwd > %[1]q.cwd; exit $__st' EXIT\n%[2]s", s.state, script)
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", s.ns, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = s.dir()
	cmd.Env = s.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// waitReady runs ready until it succeeds, the block exits, or limit passes.
func (s *session) waitReady(ready string, limit time.Duration, exited <-chan struct{}) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if err := s.command(context.Background(), ready, false).Run(); err == nil {
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

type pageBlock struct {
	line    int    // of the opening fence
	lang    string // the fence's first word
	kind    string // run, fails, background, output, file, not run
	arg     string // the ready command, or the file path
	text    string
	heading int // the level of a heading (not a block), 0 for a block
}

var headingRE = regexp.MustCompile(`^(#{1,6}) `)

var directiveRE = regexp.MustCompile(`^<!-- (test|not run)(?::\s*(.*?))?\s*-->$`)

func isShell(lang string) bool {
	switch lang {
	case "sh", "bash", "shell", "console":
		return true
	}
	return false
}

// pageBlocks returns a page's directed blocks and its headings, in order.
func pageBlocks(path string) ([]pageBlock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(path)
	var blocks []pageBlock
	var directive string
	var cur *pageBlock
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
			blocks = append(blocks, pageBlock{line: n, heading: len(headingRE.FindStringSubmatch(line)[1])})
			directive = ""
		case directiveRE.MatchString(line):
			directive = line
		case strings.HasPrefix(line, "```"):
			lang, _, _ := strings.Cut(strings.TrimPrefix(line, "```"), " ")
			if directive == "" {
				if isShell(lang) {
					return nil, fmt.Errorf("%s:%d: a %s block without a directive: mark it <!-- test --> (or another test directive), or <!-- not run: WHY -->", name, n, lang)
				}
				// An undirected block is code for another language (Go, TOML shown as
				// reference) or output: neither run nor checked; skip it whole.
				cur = &pageBlock{line: n, lang: lang, kind: "skip"}
				body.Reset()
				continue
			}
			b, err := parseDirective(directive)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, n-1, err)
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
		return nil, fmt.Errorf("%s:%d: a code block that never closes", name, cur.line)
	}
	var out []pageBlock
	for _, b := range blocks {
		if b.kind != "skip" {
			out = append(out, b)
		}
	}
	return out, nil
}

func parseDirective(line string) (pageBlock, error) {
	m := directiveRE.FindStringSubmatch(line)
	if m[1] == "not run" {
		if strings.TrimSpace(m[2]) == "" {
			return pageBlock{}, fmt.Errorf("<!-- not run --> needs a reason")
		}
		return pageBlock{kind: "not run"}, nil
	}
	args := strings.TrimSpace(m[2])
	switch {
	case args == "":
		return pageBlock{kind: "run"}, nil
	case args == "fails":
		return pageBlock{kind: "fails"}, nil
	case args == "output":
		return pageBlock{kind: "output"}, nil
	case strings.HasPrefix(args, "file "):
		return pageBlock{kind: "file", arg: strings.TrimSpace(strings.TrimPrefix(args, "file "))}, nil
	case strings.HasPrefix(args, "background; ready: "):
		return pageBlock{kind: "background", arg: strings.TrimPrefix(args, "background; ready: ")}, nil
	}
	return pageBlock{}, fmt.Errorf("unknown directive %q", line)
}

func countRun(blocks []pageBlock) int {
	n := 0
	for _, b := range blocks {
		if b.kind == "run" || b.kind == "fails" || b.kind == "background" {
			n++
		}
	}
	return n
}

// checkNotRun lints the shell blocks of a page that runs none.
func checkNotRun(t *testing.T, page string, blocks []pageBlock) {
	for _, b := range blocks {
		if b.kind == "not run" && isShell(b.lang) {
			shellcheck(t, fmt.Sprintf("%s:%d", page, b.line), b.text)
		}
	}
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

// trackedFiles lists the files git tracks: what a fresh clone holds. Untracked files of
// the work tree (a token folder left by hand, a scratch config) are not the reader's.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	return strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
}

// copyTracked copies the tracked files into dst, as a fresh clone would have them.
func copyTracked(t *testing.T, root, dst string, files []string) {
	t.Helper()
	for _, f := range files {
		src := filepath.Join(root, f)
		st, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the work tree
		}
		p := filepath.Join(dst, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if st.Mode()&os.ModeSymlink != 0 {
			if target, err := os.Readlink(src); err == nil {
				os.Symlink(target, p)
			}
			continue
		}
		if !st.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func installBinary(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// checkLeftovers fails for a file the page's blocks left in the copy that git would
// offer to commit, or that is not inside a folder .containerignore keeps out of images.
func checkLeftovers(t *testing.T, root, clone, page string, tracked []string) {
	t.Helper()
	known := make(map[string]bool, len(tracked))
	for _, f := range tracked {
		known[f] = true
	}
	var left []string
	filepath.WalkDir(clone, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(clone, p)
		if !known[filepath.ToSlash(rel)] {
			left = append(left, filepath.ToSlash(rel))
		}
		return nil
	})
	if len(left) == 0 {
		return
	}
	excluded := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(root, ".containerignore")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.Trim(strings.TrimSpace(line), "/")
			if line != "" && !strings.ContainsAny(line, "#!*?[") {
				excluded[line] = true
			}
		}
	}
	cmd := exec.Command("git", "-C", root, "check-ignore", "--no-index", "--stdin", "-z")
	cmd.Stdin = strings.NewReader(strings.Join(left, "\x00") + "\x00")
	out, _ := cmd.Output() // exit status 1 when none is ignored
	ignored := map[string]bool{}
	for _, f := range strings.Split(string(out), "\x00") {
		ignored[f] = true
	}
	var committable, imaged []string
	for _, f := range left {
		top, _, _ := strings.Cut(f, "/")
		if !ignored[f] {
			committable = append(committable, f)
		} else if !excluded[top] {
			imaged = append(imaged, f)
		}
	}
	if len(committable) > 0 {
		t.Errorf("%s's blocks left files in the clone that git does not ignore (write them into a temporary folder, or into .dev/): %s", page, summarise(committable))
	}
	if len(imaged) > 0 {
		t.Errorf("%s's blocks left files in the clone outside the folders .containerignore excludes, which an image build would copy: %s", page, summarise(imaged))
	}
}

// summarise lists paths, a folder's files as one entry with their count.
func summarise(paths []string) string {
	count := map[string]int{}
	var order []string
	for _, p := range paths {
		key := p
		if top, _, ok := strings.Cut(p, "/"); ok {
			key = top + "/"
		}
		if count[key] == 0 {
			order = append(order, key)
		}
		count[key]++
	}
	for i, k := range order {
		if count[k] > 1 {
			order[i] = fmt.Sprintf("%s (%d files)", k, count[k])
		}
	}
	return strings.Join(order, ", ")
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// nsCount numbers the pages' network namespaces.
var nsCount atomic.Int64

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

// Every relative link of the README and docs/ leads to a file of the repository, and every
// #anchor to a heading of its page (as GitHub names headings).
func TestDocsLinks(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pages, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	pages = append(pages, filepath.Join(root, "README.md"), filepath.Join(root, "CHANGELOG.md"))
	linkRE := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, page := range pages {
		data, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, page)
		for _, m := range linkRE.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %s: no such file", rel, target)
				continue
			}
			if anchor != "" && !slices.Contains(headingAnchors(t, path), anchor) {
				t.Errorf("%s: link %s: no heading with that anchor in %s", rel, target, filepath.Base(path))
			}
		}
	}
}

// headingAnchors returns the anchors GitHub gives a Markdown file's headings.
func headingAnchors(t *testing.T, path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !headingRE.MatchString(line) {
			continue
		}
		text := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range text {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchors = append(anchors, b.String())
	}
	return anchors
}

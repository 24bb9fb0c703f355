// Command bench measures provenanced as it runs: the real binary on each backend, driven
// over its Unix socket and over TCP by one load generator, against the in-process baseline
// of the same backend measured in the same run. It prints one table and writes it as
// Markdown (default bench/results.md) so that runs can be compared.
//
//	go run ./bench                  # the full run (make bench)
//	go run ./bench -smoke           # a small run that proves the harness works (CI)
//
// It needs what the tests need: SoftHSM2 for the pkcs11 rows, the TPM stack (swtpm,
// tpm2-abrmd, tpm2-pkcs11) and p11-kit for the tpm and p11kit rows, and the local-kms emulator
// (a Go tool of this module) for the awskms rows.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ib1/provenanced/testenv"
)

// row is one line of the results table.
type row struct {
	Backend   string
	Transport string
	Workload  string // "sign", "batch64", "edp", "verify-bank", "bare"
	Clients   int
	Ops       float64 // operations (signatures, records) per second
	P50, P99  time.Duration
	PeakRSS   int64 // bytes: the serving process's peak resident memory during the row
	AnonRSS   int64 // bytes: its anonymous resident memory at the row's end
	Baseline  float64
	BaseP50   time.Duration
	// CPU is the server process's own CPU time per operation; BaseCPU the baseline
	// server's, when the baseline is another process (the bare server).
	CPU, BaseCPU time.Duration
	Note         string
}

// ratio is the row's figure against its baseline: the baseline server's CPU per
// operation over this one's when both were measured, else the rates.
func (r row) ratio() string {
	if r.BaseCPU > 0 && r.CPU > 0 {
		return strconv.FormatFloat(float64(r.BaseCPU)/float64(r.CPU), 'f', 2, 64) + " (CPU)"
	}
	if r.Baseline <= 0 {
		return ""
	}
	return strconv.FormatFloat(r.Ops/r.Baseline, 'f', 2, 64)
}

type settings struct {
	n        int // requests per measurement
	clients  []int
	backends []string
	out      string
	bin      string
	work     string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare-server" {
		// The naive server the daemon is measured against, in a process of its own like
		// the daemon.
		if err := bareServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	smoke := flag.Bool("smoke", false, "a small, quick run that only proves the harness works")
	n := flag.Int("n", 20000, "requests per measurement")
	clients := flag.String("clients", "1,8,32", "client counts")
	backendList := flag.String("backends", "pem,pkcs11,tpm,p11kit,awskms", "backends to measure (tpm and p11kit are the pkcs11 backend on a TPM and through p11-kit-proxy)")
	out := flag.String("out", "bench/results.md", "where to write the Markdown table (\"\" for nowhere)")
	flag.Parse()
	cfg := settings{n: *n, out: *out}
	for _, c := range strings.Split(*clients, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || v < 1 {
			fatalf("-clients: %q is not a client count", c)
		}
		cfg.clients = append(cfg.clients, v)
	}
	cfg.backends = strings.Split(*backendList, ",")
	if *smoke {
		cfg.n = 200
		cfg.clients = []int{1, 8}
	}
	work, err := os.MkdirTemp("", "provenanced-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(work)
	cfg.work = work
	if cfg.bin, err = testenv.BuildDaemon(work); err != nil {
		fatalf("%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	h := &harness{cfg: cfg, self: self}
	start := time.Now()
	for _, b := range cfg.backends {
		if err := h.run(strings.TrimSpace(b)); err != nil {
			fatalf("%s: %v", b, err)
		}
	}
	table := h.markdown(time.Since(start), *smoke)
	fmt.Print(table)
	if cfg.out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
			fatalf("%v", err)
		}
		if err := os.WriteFile(cfg.out, []byte(table), 0o644); err != nil {
			fatalf("%v", err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", cfg.out)
	}
	if h.failures > 0 {
		fatalf("%d measurements had errors", h.failures)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func (h *harness) markdown(took time.Duration, smoke bool) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# provenanced benchmark\n\n%s, %s, %d CPUs, %s, %d requests per row%s, %s in all.\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.Version(), h.cfg.n, map[bool]string{true: " (smoke run)"}[smoke], took.Round(time.Second))
	fmt.Fprintf(&b, "Reproduce: `make bench` (`go run ./bench`). The load generator (net/http's client) shares the machine with the daemon; \"server CPU/op\" is the server process's own user+system time per operation from /proc/PID/stat, which that sharing does not distort. The daemon logs a JSON line per request to a file throughout.\n\n")
	b.WriteString("| backend | transport | workload | clients | ops/s | p50 | p99 | server CPU/op | peak RSS (anon) | baseline ops/s | baseline p50 | ratio | note |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range h.rows {
		rss := ""
		if r.PeakRSS > 0 {
			rss = fmt.Sprintf("%.1f MiB (%.1f)", float64(r.PeakRSS)/(1<<20), float64(r.AnonRSS)/(1<<20))
		}
		base := ""
		if r.Baseline > 0 {
			base = fmt.Sprintf("%.0f", r.Baseline)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Backend, r.Transport, r.Workload, r.Clients, r.Ops, dur(r.P50), dur(r.P99), dur(r.CPU), rss, base, dur(r.BaseP50), r.ratio(), r.Note)
	}
	for _, n := range h.notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	return b.String()
}

func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	default:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
	}
}

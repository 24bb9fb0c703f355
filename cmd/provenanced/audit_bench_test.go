package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ib1/provenanced/testenv"
)

// BenchmarkAuditCPU measures the daemon's own CPU time (utime+stime of the real
// binary, from /proc) per signature over its Unix socket, with the audit log off, on (a
// file, fsynced every second), on and sealed (a checkpoint signed every 100 ms, a hundred
// times the default's rate), on with fsync = true (each batch fsynced before its
// answers), and on with a policy that identifies every caller:
//
//	go test -run '^$' -bench AuditCPU -benchtime 20000x ./cmd/provenanced/
//
// The figures that matter are the ratio of "on" to "off" (at most 1.15) and of "sealed" to
// "on" (at most 1.05).
func BenchmarkAuditCPU(b *testing.B) {
	for _, v := range []struct {
		name, audit string
		policy      *testenv.Config
	}{
		{"audit=off", "none", nil},
		{"audit=on", "", nil},
		{"audit=on,sealed", "sealed", nil},
		{"audit=on,fsync", "fsync", nil},
		{"audit=on,clients", "", testenv.NewConfig().Table("clients.root", "uids", []int{0}, "keys", []string{"*"}, "allow", []string{"sign"}, "rate", 1000000)},
	} {
		b.Run(v.name, func(b *testing.B) {
			d := startAccessDaemon(b, v.policy, v.audit)
			c := testenv.UnixClient(d.Socket)
			c.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
			body := digestBody(1)
			op := func(int) error {
				resp, err := c.Post("http://localhost/v1/keys/signing/sign", "application/json", strings.NewReader(body))
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}
			testenv.Load(32, 2000, op) // warm up
			before := procCPU(b, d.Cmd.Process.Pid)
			b.ResetTimer()
			r := testenv.Load(32, b.N, op)
			b.StopTimer()
			after := procCPU(b, d.Cmd.Process.Pid)
			if r.Errors > 0 {
				b.Fatalf("%d errors: %v", r.Errors, r.FirstError)
			}
			b.ReportMetric(float64(after-before)*1e6/float64(clockTicks)/float64(b.N), "daemon-cpu-µs/sig")
			b.ReportMetric(r.OpsPerSec(), "ops/s")
		})
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// procCPU is the process's utime+stime in clock ticks.
func procCPU(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces; the fields after it are space-separated.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of the whole line
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

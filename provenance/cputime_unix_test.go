//go:build unix

package provenance

import (
	"syscall"
	"testing"
	"time"
)

// processCPUTime is the CPU time used by this process so far. Benchmarks report it per
// operation as well as the wall-clock time, which on a shared machine also counts the time
// other processes (or a busy VM host) took the CPU away.
func processCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Tmpfs mounts a tmpfs of size bytes in a temporary folder and returns its path: a disk
// that fills up for real (ENOSPC), where a test needs one. It needs root, which CI has;
// it is unmounted when the test ends.
func Tmpfs(t TB, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if out, err := exec.Command("mkdir", "-p", dir).CombinedOutput(); err != nil {
		t.Fatalf("mkdir %s: %v: %s", dir, err, out)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size)+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs (the test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// FillDisk writes a file in dir until the disk is full, and returns a function that
// removes it again.
func FillDisk(t TB, dir string) (free func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatalf("filling the disk: %v", err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break // ENOSPC: full
		}
	}
	// A last byte may still fit in a partly filled page.
	for {
		if _, err := f.Write(chunk[:1]); err != nil {
			break
		}
	}
	return func() { os.Remove(name) }
}

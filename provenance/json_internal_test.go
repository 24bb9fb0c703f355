package provenance

import (
	"encoding/binary"
	"testing"
)

// TestHasSpecialByte checks the eight-bytes-at-a-time test against the byte table for
// every byte value at every position, amid plain and special neighbours.
func TestHasSpecialByte(t *testing.T) {
	for _, fill := range []byte{'a', ' ', '~', 0x7f, '"', 0x00, 0xff} {
		for pos := 0; pos < 8; pos++ {
			for c := 0; c < 256; c++ {
				var b [8]byte
				for i := range b {
					b[i] = fill
				}
				b[pos] = byte(c)
				want := false
				for _, x := range b {
					if !plainByte[x] {
						want = true
					}
				}
				if got := hasSpecialByte(binary.LittleEndian.Uint64(b[:])); got != want {
					t.Fatalf("bytes %x: got %v, want %v", b, got, want)
				}
			}
		}
	}
}

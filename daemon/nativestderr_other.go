//go:build !linux

package daemon

import (
	"errors"
	"os"
)

// CaptureNativeStderr is only done on Linux; elsewhere modules print to stderr as they like.
func CaptureNativeStderr() (*os.File, <-chan string, func(), error) {
	return nil, nil, nil, errors.New("not on this system")
}

//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package persistence

import (
	"errors"
	"os"
	"syscall"
)

// flockExclusive takes an exclusive flock on f without waiting and returns
// errLockHeld when another open file description holds it. The lock belongs
// to the open file description, so a second Open in the same process fails
// too.
func flockExclusive(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLockHeld
	}

	return err
}

// flockRelease drops the flock on f.
func flockRelease(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

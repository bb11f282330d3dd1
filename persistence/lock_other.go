//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package persistence

import (
	"errors"
	"os"
	"runtime"
)

// flockExclusive fails because this platform has no flock(2). The embedded
// store is not opened without a lock, because two processes writing one
// JetStream directory corrupt it.
func flockExclusive(f *os.File) error {
	return errors.New("data directory locking is not supported on " + runtime.GOOS +
		"; use an external NATS server (Config.NatsURL)")
}

// flockRelease does nothing because flockExclusive never succeeds here.
func flockRelease(f *os.File) error {
	return nil
}

package persistence

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// lockFileName is the file in the data directory that holds the exclusive
// lock of the process that has the directory open.
const lockFileName = "LOCK"

// errLockHeld reports that another open file description holds the lock.
var errLockHeld = errors.New("lock held by another process")

// dataDir is a prepared, locked data directory.
type dataDir struct {
	path string
	lock *os.File
}

// openDataDir creates path when needed, checks that files in it can be
// written and fsynced, and takes the exclusive lock on path/LOCK.
func openDataDir(path string) (*dataDir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: data directory %q: %v", ErrDataDir, path, err)
	}

	err = os.MkdirAll(abs, 0o750)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot create data directory %q: %v; "+
			"choose a path where this user can create directories", ErrDataDir, abs, err)
	}

	err = probeWritable(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot write to data directory %q: %v; "+
			"give this user write permission or choose another directory", ErrDataDir, abs, err)
	}

	lock, err := lockDir(abs)
	if err != nil {
		return nil, err
	}

	return &dataDir{path: abs, lock: lock}, nil
}

// probeWritable writes, fsyncs and removes a file in dir.
func probeWritable(dir string) error {
	name := filepath.Join(dir, ".probe-"+hex.EncodeToString(randomBytes(8)))

	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}

	_, err = f.Write([]byte("livevote write probe\n"))
	if err == nil {
		err = f.Sync()
	}
	closeErr := f.Close()
	removeErr := os.Remove(name)

	if err != nil {
		return err
	}
	if closeErr != nil {
		return closeErr
	}

	return removeErr
}

// lockDir opens dir/LOCK and takes an exclusive, non-blocking lock on it.
func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, lockFileName)

	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot open lock file %q: %v", ErrDataDir, name, err)
	}

	err = flockExclusive(f)
	if errors.Is(err, errLockHeld) {
		f.Close()
		return nil, fmt.Errorf("%w: %q is in use by another LiveVote process (lock file %s); "+
			"stop that process or choose another data directory", ErrLocked, dir, name)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: cannot lock %q: %v", ErrDataDir, name, err)
	}

	return f, nil
}

// close releases the lock. Closing the file descriptor drops the flock.
func (d *dataDir) close() error {
	err := flockRelease(d.lock)
	closeErr := d.lock.Close()
	if err != nil {
		return fmt.Errorf("release lock on data directory %q: %w", d.path, err)
	}
	if closeErr != nil {
		return fmt.Errorf("close lock file of data directory %q: %w", d.path, closeErr)
	}

	return nil
}

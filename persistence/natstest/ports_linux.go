package natstest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Reserved ports come from [lowestPort, start of the ephemeral range).
// The kernel gives out ports of that range only to programs that ask for
// one by number, so neither a listener on port 0 nor an outgoing
// connection of another test takes a reserved port while its server is
// down. minReservable is the smallest such range worth drawing from;
// below it freePorts falls back to ports the kernel picks.
const (
	lowestPort    = 10000
	minReservable = 2000
	reserveTries  = 200
)

// portLocks holds the open lock file of every port this process reserved.
// The files stay open, and so locked, until the process exits; the kernel
// then drops the locks, whatever way the process ended.
var portLocks []*os.File

// reservePort returns a port outside the kernel's ephemeral range that no
// other process of this machine reserved through the same lock directory,
// that is not in used, and that was free a moment ago. The reservation is
// an exclusive flock on a file named after the port in a directory of the
// temporary directory that all test processes of one user share.
func reservePort(used map[int]bool) (int, error) {
	ephemeralStart, err := ephemeralRangeStart()
	if err != nil || ephemeralStart-lowestPort < minReservable {
		return kernelPort(used)
	}

	// One directory per user, so that another user's directory neither
	// blocks the reservation nor shares its locks.
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("natstest-ports-%d", os.Getuid()))
	err = os.MkdirAll(dir, 0o700)
	if err != nil {
		return 0, fmt.Errorf("create the port lock directory: %w", err)
	}

	for range reserveTries {
		port := lowestPort + rand.IntN(ephemeralStart-lowestPort)
		if used[port] {
			continue
		}

		lock, err := lockPort(dir, port)
		if err != nil {
			return 0, err
		}
		if lock == nil {
			continue // another process holds it
		}

		if !portFree(port) {
			lock.Close()
			continue
		}

		portLocks = append(portLocks, lock)

		return port, nil
	}

	return 0, fmt.Errorf("found no free loopback port in [%d, %d) in %d tries: other processes hold them or the locks in %s; run fewer test processes at once",
		lowestPort, ephemeralStart, reserveTries, dir)
}

// lockPort takes the lock of port in dir. It returns nil and no error when
// another open file holds the lock.
func lockPort(dir string, port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the lock file of port %d: %w", port, err)
	}

	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return nil, nil
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock port %d: %w", port, err)
	}

	return f, nil
}

// ephemeralRangeStart returns the first port of the range the kernel picks
// local ports from.
func ephemeralRangeStart() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}

	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, fmt.Errorf("invalid ip_local_port_range %q: expected two port numbers", b)
	}

	return strconv.Atoi(fields[0])
}

//go:build !linux

package natstest

// reservePort returns a port the kernel picks: reserving ports across
// processes is done only on Linux.
func reservePort(used map[int]bool) (int, error) {
	return kernelPort(used)
}

//go:build !linux

package natstest

import "syscall"

// procAttr returns nil: only Linux can tie a child's life to its parent,
// so elsewhere a test process that dies without its cleanups leaves its
// servers running.
func procAttr() *syscall.SysProcAttr {
	return nil
}

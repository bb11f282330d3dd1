package natstest

import "syscall"

// procAttr sets Pdeathsig, so that Linux kills a server when the test
// process dies without running its cleanups, as on the panic of
// `go test -timeout`, and no server outlives the run on its ports.
//
// NOTE: Linux sends the signal when the thread that started the server
// exits. The Go runtime ends a thread only when a goroutine that locked it
// with runtime.LockOSThread returns without unlocking. A test that does that
// can take a server down, and the cleanup then reports a server that exited
// on its own.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

package natstest

import (
	"fmt"
	"net"
	"sync"
)

// usedPorts contains every port that freePorts returned in this process, so
// that a port of a killed server, free until its restart, never goes to
// another server of this process.
var usedPorts = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago and that no earlier call returned. Where the platform allows, each
// port also lies outside the kernel's ephemeral range and stays reserved
// against other test processes until this process exits (reservePort), so
// that the port of a killed server is still free when Restart starts it
// again: `go test ./...` runs packages as parallel processes, and each of
// them starts servers and hubs.
func freePorts(n int) ([]int, error) {
	usedPorts.Lock()
	defer usedPorts.Unlock()

	ports := make([]int, 0, n)
	for len(ports) < n {
		port, err := reservePort(usedPorts.ports)
		if err != nil {
			return nil, err
		}
		usedPorts.ports[port] = true
		ports = append(ports, port)
	}

	return ports, nil
}

// kernelPort returns a loopback port that the kernel picked and that is
// not in used.
//
// NOTE: the port belongs to the kernel's ephemeral range, so any process
// can get it between this call and the server's start, or while a killed
// server waits for Restart. The server then fails to start and its log
// names the port.
func kernelPort(used map[int]bool) (int, error) {
	// Every listener stays open until the end, so the kernel does not hand
	// out one port twice. 100 tries leave room for ports this process used.
	var listeners []net.Listener
	defer func() {
		for _, ln := range listeners {
			ln.Close()
		}
	}()

	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free loopback port: %w", err)
		}
		listeners = append(listeners, ln)

		port := ln.Addr().(*net.TCPAddr).Port
		if !used[port] {
			return port, nil
		}
	}

	return 0, fmt.Errorf("found no free loopback port in 100 tries")
}

// portFree reports whether a listener can bind 127.0.0.1:port now.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()

	return true
}

// FreePort returns a loopback TCP port for a server that a test stops and
// starts again on the same port. It comes from the same reserved pool as
// the ports of a Cluster, so neither another test process nor an outgoing
// connection takes it while the server is down.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}

	return ports[0], nil
}

package natstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestReservedPortsStayOutOfOtherHands checks that freePorts returns ports
// below the kernel's ephemeral range, each locked so that a second opener
// of its lock file (as another test process would be) cannot take it.
func TestReservedPortsStayOutOfOtherHands(t *testing.T) {
	start, err := ephemeralRangeStart()
	if err != nil {
		t.Fatalf("read the ephemeral range: %v", err)
	}
	if start-lowestPort < minReservable {
		t.Fatalf("ephemeral range starts at %d: too low to reserve ports below it, so freePorts uses kernel ports here", start)
	}

	ports, err := freePorts(3)
	if err != nil {
		t.Fatalf("freePorts: %v", err)
	}

	dir := filepath.Join(os.TempDir(), fmt.Sprintf("natstest-ports-%d", os.Getuid()))
	seen := map[int]bool{}
	for _, port := range ports {
		if port < lowestPort || port >= start {
			t.Errorf("port %d lies outside [%d, %d)", port, lowestPort, start)
		}
		if seen[port] {
			t.Errorf("port %d returned twice", port)
		}
		seen[port] = true

		lock, err := lockPort(dir, port)
		if err != nil {
			t.Fatalf("lockPort(%d): %v", port, err)
		}
		if lock != nil {
			lock.Close()
			t.Errorf("a second lock of port %d succeeded while this process holds it", port)
		}
	}
}

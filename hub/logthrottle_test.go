package hub

import (
	"testing"
	"time"
)

func TestLogThrottleOneLinePerInterval(t *testing.T) {
	throttle := logThrottle{interval: time.Second}
	start := time.Unix(1000, 0)

	if ok, _ := throttle.allow(start); !ok {
		t.Fatal("first line held back")
	}
	for i := range 5 {
		if ok, _ := throttle.allow(start.Add(time.Duration(i+1) * 100 * time.Millisecond)); ok {
			t.Fatalf("line %d within the interval let through", i+2)
		}
	}
	ok, suppressed := throttle.allow(start.Add(time.Second))
	if !ok {
		t.Fatal("line after the interval held back")
	}
	if suppressed != 5 {
		t.Fatalf("suppressed = %d, want 5", suppressed)
	}
}

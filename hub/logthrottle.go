package hub

import (
	"sync"
	"time"
)

// logThrottle lets one log line of a kind through per interval and counts the lines
// it held back, so that a surge of identical warnings costs one line a second.
type logThrottle struct {
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether a line may be written now and, if so, how many were held
// back since the last one.
func (t *logThrottle) allow(now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()

	if now.Sub(t.last) < t.interval {
		t.suppressed++
		return false, 0
	}
	suppressed, t.suppressed = t.suppressed, 0
	t.last = now
	return true, suppressed
}

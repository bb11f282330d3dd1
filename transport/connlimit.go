package transport

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// DefaultMaxConnsPerIP bounds the open TCP connections of one client IP. A hall of
// phones behind one NAT address shares it, so the default is sized for a large room.
const DefaultMaxConnsPerIP = 10_000

// refusedBody is the error a connection over its IP's limit receives before it is closed.
const refusedBody = `{"error":{"code":"overloaded","message":"too many open connections from this address; retry in a few seconds"}}`

var refusedResponse = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\nConnection: close\r\n" +
	"Content-Length: " + strconv.Itoa(len(refusedBody)) + "\r\n\r\n" + refusedBody

// LimitListener wraps ln so that each remote IP holds at most perIP open connections.
// A connection over the limit gets a 503 response and is closed at once. It never
// reaches the HTTP server. perIP <= 0 means DefaultMaxConnsPerIP.
func LimitListener(ln net.Listener, perIP int, logger *slog.Logger) net.Listener {
	if perIP <= 0 {
		perIP = DefaultMaxConnsPerIP
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &limitListener{Listener: ln, perIP: perIP, logger: logger, open: make(map[string]int)}
}

type limitListener struct {
	net.Listener
	perIP  int
	logger *slog.Logger

	mu          sync.Mutex
	open        map[string]int // remote IP -> open connections
	lastWarning time.Time      // refusals are logged at most once a second
}

// Accept returns the next connection whose IP is under its limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if l.acquire(ip) {
			return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
		}
		go refuse(c)
	}
}

func (l *limitListener) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip] >= l.perIP {
		if now := time.Now(); now.Sub(l.lastWarning) >= time.Second {
			l.lastWarning = now
			l.logger.Warn("connection refused: too many open connections from one address", "remote_ip", ip, "limit", l.perIP)
		}
		return false
	}
	l.open[ip]++
	return true
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

// refuse reads the start of the request, so that the client reads the 503 as the
// response to it, then writes the 503 and closes the connection, all within two seconds.
func refuse(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	if _, err := c.Read(buf); err != nil {
		return
	}
	_, _ = c.Write([]byte(refusedResponse))
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// limitedConn gives its slot back once, on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

package natstest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections from a loopback port to a target and
// can cut the link the way a network partition does: while cut, no byte
// passes in either direction, connections stay open, and new connections
// are accepted but get no byte either. Heal lets the held bytes through, so
// a connection that outlived the cut carries on where it stopped.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	passed chan struct{} // closed while the link passes bytes
	conns  map[net.Conn]struct{}
	closed bool

	links atomic.Int32 // links whose ends are both open; see Links

	wg sync.WaitGroup
}

// StartProxy listens on a free loopback port and forwards to target, such
// as the client address of a server, until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: proxy listen: %v", err)
	}
	p := &Proxy{t: t, ln: ln, target: target, passed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.passed)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr returns the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut stops every byte until heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.passed:
		p.passed = make(chan struct{})
	default: // already cut
	}
}

// Heal lets bytes pass again, the held ones first.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.passed:
	default:
		close(p.passed)
	}
}

// gate returns a channel that is closed while the link passes bytes.
func (p *Proxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client, server) {
			return
		}
		p.links.Add(1)
		p.wg.Go(func() {
			p.pipe(client, server)
			p.links.Add(-1)
		})
		p.wg.Go(func() { p.pipe(server, client) })
	}
}

// track records both ends of a link so close can end them. It returns false
// and closes them when the proxy is closed already.
func (p *Proxy) track(a, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		a.Close()
		b.Close()
		return false
	}
	p.conns[a], p.conns[b] = struct{}{}, struct{}{}
	return true
}

// pipe copies src to dst. While the link is cut it holds what it read and
// reads no more, so the sender's buffers fill as behind a dead link. It
// closes both ends when either fails.
func (p *Proxy) pipe(src, dst net.Conn) {
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// close stops the proxy: no new links, every open link ends, and every
// goroutine returns before close does.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	select {
	case <-p.passed:
	default:
		close(p.passed) // releases pipes held by a cut; their writes then fail
	}
	p.mu.Unlock()
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		p.t.Errorf("natstest: proxy close: %v", err)
	}
	p.wg.Wait()
}

// Links returns the number of open links through the proxy, such as the
// connections of the clients that use it now.
func (p *Proxy) Links() int { return int(p.links.Load()) }

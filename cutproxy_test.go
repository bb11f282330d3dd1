package main

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// cutProxy forwards TCP connections from a loopback port to a target and
// can cut the link the way a network partition does: while cut, no byte
// passes in either direction, connections stay open, and new connections
// are accepted but get no byte either. Heal lets the held bytes through, so
// a connection that outlived the cut carries on where it stopped.
type cutProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	passed chan struct{} // closed while the link passes bytes
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// startCutProxy listens on a free loopback port and forwards to target
// until the test ends.
func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cut proxy listen: %v", err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, passed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.passed)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// addr returns the proxy's listening address.
func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// cut stops every byte until heal.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.passed:
		p.passed = make(chan struct{})
	default: // already cut
	}
}

// heal lets bytes pass again, the held ones first.
func (p *cutProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.passed:
	default:
		close(p.passed)
	}
}

// gate returns a channel that is closed while the link passes bytes.
func (p *cutProxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed
}

func (p *cutProxy) accept() {
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
		p.wg.Go(func() { p.pipe(client, server) })
		p.wg.Go(func() { p.pipe(server, client) })
	}
}

// track records both ends of a link so close can end them. It returns false
// and closes them when the proxy is closed already.
func (p *cutProxy) track(a, b net.Conn) bool {
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
func (p *cutProxy) pipe(src, dst net.Conn) {
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
func (p *cutProxy) close() {
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
		p.t.Errorf("cut proxy close: %v", err)
	}
	p.wg.Wait()
}

// TestCutProxyHoldsBytesUntilHealed checks the proxy itself against an echo
// server: bytes pass, a cut holds them on an open connection, and heal
// delivers them in order.
func TestCutProxyHoldsBytesUntilHealed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	p := startCutProxy(t, ln.Addr().String())
	conn, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	echo := func(msg string, wait time.Duration) (string, error) {
		if _, err := conn.Write([]byte(msg)); err != nil {
			return "", err
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, len(msg))
		n, err := io.ReadFull(conn, buf)
		return string(buf[:n]), err
	}

	if got, err := echo("before", 5*time.Second); err != nil || got != "before" {
		t.Fatalf("echo before the cut: %q, %v", got, err)
	}

	p.cut()
	got, err := echo("during", 300*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || got != "" {
		t.Fatalf("echo during the cut: %q, %v; want nothing until the deadline", got, err)
	}

	p.heal()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len("during"))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "during" {
		t.Fatalf("held bytes after heal: %q, %v; want %q", buf, err, "during")
	}
	if got, err := echo("after", 5*time.Second); err != nil || got != "after" {
		t.Fatalf("echo after heal: %q, %v", got, err)
	}
}

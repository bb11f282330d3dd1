package natstest

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestProxyHoldsBytesUntilHealed checks the proxy itself against an echo
// server: bytes pass, a cut holds them on an open connection, and heal
// delivers them in order.
func TestProxyHoldsBytesUntilHealed(t *testing.T) {
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

	p := StartProxy(t, ln.Addr().String())
	conn, err := net.Dial("tcp", p.Addr())
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

	p.Cut()
	got, err := echo("during", 300*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || got != "" {
		t.Fatalf("echo during the cut: %q, %v; want nothing until the deadline", got, err)
	}

	p.Heal()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len("during"))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "during" {
		t.Fatalf("held bytes after heal: %q, %v; want %q", buf, err, "during")
	}
	if got, err := echo("after", 5*time.Second); err != nil || got != "after" {
		t.Fatalf("echo after heal: %q, %v", got, err)
	}
}

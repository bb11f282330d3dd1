package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestCheckTargetRejectsRemote(t *testing.T) {
	t.Parallel()
	cases := []struct {
		url         string
		allowRemote bool
		wantErr     error
	}{
		{"http://127.0.0.1:8080", false, nil},
		{"http://127.9.8.7:8080", false, nil},
		{"http://[::1]:8080", false, nil},
		{"http://localhost:8080", false, nil},
		{"http://192.0.2.10:8080", false, errNotLoopback},
		{"http://[2001:db8::1]:8080", false, errNotLoopback},
		{"http://[::ffff:192.0.2.10]:8080", false, errNotLoopback},
		{"http://192.0.2.10:8080", true, nil},
		{"ftp://127.0.0.1", false, errInvalidFlag},
		{"http://:8080", false, errInvalidFlag},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			_, _, err := checkTarget(context.Background(), tc.url, tc.allowRemote, net.DefaultResolver)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("checkTarget: %v, want no error", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("checkTarget error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestSourceAddrsAreLoopback(t *testing.T) {
	t.Parallel()
	target := netip.MustParseAddr("127.0.0.1")
	for _, conns := range []int{1, 18000, 50000, 200000} {
		addrs := sourceAddrs(target, conns)
		if want := max(2, (conns+connsPerSourceAddr-1)/connsPerSourceAddr); len(addrs) != want {
			t.Errorf("%d conns: %d source addresses, want %d", conns, len(addrs), want)
		}
		if err := checkSourceAddrs(addrs); err != nil {
			t.Errorf("%d conns: %v", conns, err)
		}
		seen := map[netip.Addr]bool{target: true}
		for _, a := range addrs {
			if seen[a] {
				t.Errorf("%d conns: address %s repeats or is the target", conns, a)
			}
			seen[a] = true
		}
	}
	if addrs := sourceAddrs(netip.MustParseAddr("::1"), 10); addrs != nil {
		t.Errorf("IPv6 target: source addresses %v, want none", addrs)
	}
	if err := checkSourceAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.1")}); !errors.Is(err, errNotLoopback) {
		t.Errorf("checkSourceAddrs(10.0.0.1) = %v, want %v", err, errNotLoopback)
	}
}

func TestParseFlagsRejectsBadValues(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{"-sockets", "0"},
		{"-sockets", "200001"},
		{"-ramp", "1m", "-duration", "10s"},
		{"-duration", "10m"},
		{"-polls", "101"},
		{"-options", "1"},
		{"-retry-share", "1.5"},
		{"-profile", "spike"},
		{"-sockets", "40000", "-workers", "2"},
		{"-rate", "-1"},
		{"extra"},
	}
	for _, args := range cases {
		if _, err := parseFlags(args, discard{}); !errors.Is(err, errInvalidFlag) {
			t.Errorf("parseFlags(%q) = %v, want %v", args, err, errInvalidFlag)
		}
	}

	cfg, err := parseFlags([]string{"-sockets", "40000"}, discard{})
	if err != nil {
		t.Fatalf("parseFlags(-sockets 40000): %v", err)
	}
	if cfg.Workers != 3 {
		t.Errorf("auto workers for 40000 sockets = %d, want 3", cfg.Workers)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

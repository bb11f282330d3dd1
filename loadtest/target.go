package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
)

// Sentinel errors of the load tester.
var (
	// errNotLoopback reports a target or source address outside the loopback range.
	errNotLoopback = errors.New("loadtest: address is not loopback")
	// errInvalidFlag reports a flag value out of range.
	errInvalidFlag = errors.New("loadtest: invalid flag")
	// errAPI reports a LiveVote API call that returned an unexpected status.
	errAPI = errors.New("loadtest: LiveVote API call failed")
	// errWorker reports a worker process that failed or sent malformed figures.
	errWorker = errors.New("loadtest: worker failed")
)

// connsPerSourceAddr is the number of sockets given to one loopback source address.
// Linux hands out about 28,000 ephemeral ports per (source, destination) pair with the
// default ip_local_port_range of 32768-60999, so 20,000 leaves room for the HTTP
// set-up calls and for sockets still in TIME_WAIT from a previous run.
const connsPerSourceAddr = 20000

// checkTarget parses rawURL and resolves its host. Every resolved address must be
// loopback unless allowRemote is set. It returns the URL and the first resolved address.
func checkTarget(ctx context.Context, rawURL string, allowRemote bool, resolver *net.Resolver) (*url.URL, netip.Addr, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("%w: -url %q: %v", errInvalidFlag, rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, netip.Addr{}, fmt.Errorf("%w: -url %q: the scheme must be http or https", errInvalidFlag, rawURL)
	}
	host := u.Hostname()
	if host == "" {
		return nil, netip.Addr{}, fmt.Errorf("%w: -url %q has no host", errInvalidFlag, rawURL)
	}

	addrs, err := resolveHost(ctx, host, resolver)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	if !allowRemote {
		for _, a := range addrs {
			if !a.IsLoopback() {
				return nil, netip.Addr{}, fmt.Errorf("%w: -url host %q resolves to %s; aim the load tester at a server on this machine (127.0.0.1 or ::1) or set -allow-remote", errNotLoopback, host, a)
			}
		}
	}
	return u, addrs[0], nil
}

func resolveHost(ctx context.Context, host string, resolver *net.Resolver) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ips, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("%w: resolve -url host %q: %v", errInvalidFlag, host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: -url host %q resolves to no address", errInvalidFlag, host)
	}
	out := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		out[i] = ip.Unmap()
	}
	return out, nil
}

// sourceAddrs returns the local addresses that sockets bind to: 127.0.0.2, 127.0.0.3, …
// one for every connsPerSourceAddr connections and at least two, when the target is an
// IPv4 loopback address. For any other target it returns nil and the kernel picks.
func sourceAddrs(target netip.Addr, conns int) []netip.Addr {
	if !target.Is4() || !target.IsLoopback() {
		return nil
	}
	n := max(2, (conns+connsPerSourceAddr-1)/connsPerSourceAddr)
	out := make([]netip.Addr, 0, n)
	for i := range n {
		v := 2 + i
		out = append(out, netip.AddrFrom4([4]byte{127, 0, byte(v >> 8), byte(v)}))
	}
	return out
}

// checkSourceAddrs returns an error naming the first address outside 127.0.0.0/8.
func checkSourceAddrs(addrs []netip.Addr) error {
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for _, a := range addrs {
		if !loopback.Contains(a) {
			return fmt.Errorf("%w: source address %s is outside 127.0.0.0/8", errNotLoopback, a)
		}
	}
	return nil
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and returns the new
// soft limit.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

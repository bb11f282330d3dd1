package persistence

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// reconnectWait is the pause between reconnect attempts to external servers.
const reconnectWait = 2 * time.Second

// A connection to an external server sends a ping every pingInterval and
// counts as dead once more than maxPingsOut pings wait for an answer, that
// is 2 to 3 s after the server fell silent. It then reconnects to another
// server. nats.go's defaults (2 min, 2) would leave a hub whose server froze
// or became unreachable without a store for about 6 minutes; in cluster
// mode the others drop such a hub after the member TTL (5 s), so the hub
// must find another server within that time.
const (
	pingInterval = time.Second
	maxPingsOut  = 2
)

// connectExternal connects to the servers in cfg.NatsURL. Once connected, the
// connection reconnects without limit, every 2 s, and logs each disconnect
// and reconnect. A server that stops answering pings counts as lost. The first connect is not retried, so a wrong URL fails Open.
func (s *Store) connectExternal() error {
	opts := s.connOptions(
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			s.log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("NATS reconnected", "nats_url", nc.ConnectedUrlRedacted())
		}),
	)

	nc, err := nats.Connect(s.cfg.NatsURL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w; check that the servers run and the URL is right",
			redactURLs(s.cfg.NatsURL), err)
	}
	s.nc = nc

	return nil
}

// redactURLs replaces the user information of each comma separated URL with
// "redacted", because it can contain a password or token.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, part := range parts {
		part = strings.TrimSpace(part)

		u, err := url.Parse(part)
		if err != nil {
			if strings.Contains(part, "@") {
				part = "(unparsable URL with user information)"
			}
			parts[i] = part
			continue
		}

		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}

	return strings.Join(parts, ",")
}

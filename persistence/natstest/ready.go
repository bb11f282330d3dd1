package natstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// readyPollInterval is the pause between two readiness checks.
const readyPollInterval = 50 * time.Millisecond

// waitReady waits up to readyTimeout until checkReady passes. It returns at
// once when a server process exits.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(readyTimeout)

	for {
		err := c.checkReady()
		if err == nil {
			return nil
		}
		if errors.Is(err, errExited) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %s: %w; server logs are in %s", readyTimeout, err, c.logDir)
		}

		time.Sleep(readyPollInterval)
	}
}

// checkReady returns nil when every running server passes the full
// /healthz check: JetStream enabled, a known meta leader, and every stream
// and consumer of the server current. In a cluster, every running server
// must also name the same meta leader, which must report every other
// running server as a current, online peer.
func (c *Cluster) checkReady() error {
	c.mu.Lock()
	var running []*server
	for _, s := range c.servers {
		err := s.exitError()
		if err != nil {
			c.mu.Unlock()
			return err
		}
		if s.running() {
			running = append(running, s)
		}
	}
	c.mu.Unlock()

	if len(running) == 0 {
		return errors.New("no server runs")
	}

	for _, s := range running {
		err := c.checkHealth(s)
		if err != nil {
			return err
		}
	}

	if len(c.servers) == 1 {
		return nil
	}

	return c.checkMeta(running)
}

// checkHealth returns nil when GET /healthz of s returns 200.
func (c *Cluster) checkHealth(s *server) error {
	var health struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}

	status, err := c.getJSON(s, "/healthz", &health)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("server %s: /healthz returned %d %s: %s", s.name, status, health.Status, health.Error)
	}

	return nil
}

// jszMeta is the part of a /jsz reply that checkMeta reads.
type jszMeta struct {
	Meta *struct {
		Leader   string     `json:"leader"`
		Replicas []metaPeer `json:"replicas"`
	} `json:"meta_cluster"`
}

// metaPeer is a peer of the meta group as its leader reports it.
type metaPeer struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
}

// checkMeta returns nil when every running server names the same meta
// leader, the leader runs, and its /jsz lists the other running servers as
// current and online.
func (c *Cluster) checkMeta(running []*server) error {
	leader := ""
	var leaderInfo jszMeta

	for _, s := range running {
		var info jszMeta
		status, err := c.getJSON(s, "/jsz", &info)
		if err != nil {
			return err
		}
		if status != http.StatusOK || info.Meta == nil || info.Meta.Leader == "" {
			return fmt.Errorf("server %s: /jsz returned %d and no meta leader", s.name, status)
		}
		if leader != "" && info.Meta.Leader != leader {
			return fmt.Errorf("servers disagree on the meta leader: %s and %s", leader, info.Meta.Leader)
		}
		leader = info.Meta.Leader
		if s.name == leader {
			leaderInfo = info
		}
	}

	if leaderInfo.Meta == nil {
		return fmt.Errorf("meta leader %s is not a running server of this cluster", leader)
	}

	for _, s := range running {
		if s.name == leader {
			continue
		}

		i := slices.IndexFunc(leaderInfo.Meta.Replicas, func(p metaPeer) bool { return p.Name == s.name })
		if i < 0 {
			return fmt.Errorf("meta leader %s does not list server %s as a peer yet", leader, s.name)
		}
		peer := leaderInfo.Meta.Replicas[i]
		if !peer.Current || peer.Offline {
			return fmt.Errorf("meta leader %s reports server %s current=%t offline=%t", leader, s.name, peer.Current, peer.Offline)
		}
	}

	return nil
}

// getJSON gets path from the monitoring port of s and decodes the JSON
// reply into v. It returns the HTTP status.
func (c *Cluster) getJSON(s *server, path string, v any) (int, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", s.monitorPort, path)

	resp, err := c.http.Get(url)
	if err != nil {
		return 0, fmt.Errorf("server %s: %w", s.name, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("server %s: read %s: %w", s.name, url, err)
	}

	err = json.Unmarshal(body, v)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("server %s: decode %s reply %q: %w", s.name, url, body, err)
	}

	return resp.StatusCode, nil
}

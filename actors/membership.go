package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/livevote/livevote/persistence"
)

// memberRecord is the record that a member stores under its id in the members bucket.
type memberRecord struct {
	Cluster string   `json:"cluster"`
	ID      string   `json:"id"`
	Host    string   `json:"host"`
	Port    int      `json:"port"`
	Kinds   []string `json:"kinds"`
	// Sees lists the ids of the members in the sender's member list, so
	// that a member can tell when the others dropped it.
	Sees []string `json:"sees,omitempty"`
}

// natsMembership is a Proto.Actor cluster provider that keeps the member
// list in a JetStream KV bucket, so a cluster needs nothing besides the NATS
// servers that it already uses for votes. Each member puts its record every
// heartbeat and watches the bucket. A member whose record was not updated
// for ttl leaves the topology, and a graceful stop deletes the record at
// once. While a member does not see its own heartbeats come back within
// freshHeartbeats periods, it keeps its last topology instead of dropping
// the others.
type natsMembership struct {
	kv        jetstream.KeyValue
	nc        *nats.Conn
	heartbeat time.Duration
	ttl       time.Duration
	log       *slog.Logger
	onMembers func(cluster.Members) // receives each new member list before the cluster does
	onDropped func()                // called once when the others dropped this member

	droppedSince time.Time // since when a fresh peer has left this member out
	dropped      bool
	removed      map[string]bool // members taken off the list, which never return
	wasCutOff    bool            // this member's own heartbeats were not coming back
	leftOut      bool            // the last placement list left this member out

	cancel context.CancelFunc
	done   chan struct{}
	self   memberRecord
	mu     sync.Mutex // guards closed
	closed bool
}

func newNATSMembership(nc *nats.Conn, kv jetstream.KeyValue, heartbeat, ttl time.Duration,
	onMembers func(cluster.Members), onDropped func(), log *slog.Logger) *natsMembership {
	return &natsMembership{nc: nc, kv: kv, heartbeat: heartbeat, ttl: ttl, onMembers: onMembers, onDropped: onDropped,
		removed: make(map[string]bool), log: log}
}

// StartMember announces this member and starts the heartbeat and the
// watch that feed the cluster's member list.
func (p *natsMembership) StartMember(c *cluster.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return fmt.Errorf("actors: cluster member address: %w", err)
	}
	p.self = memberRecord{Cluster: c.Config.Name, ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: c.GetClusterKinds()}
	value, err := json.Marshal(p.self)
	if err != nil {
		return fmt.Errorf("actors: encode member record: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	err = p.announce(ctx, value)
	if err != nil {
		cancel()
		return fmt.Errorf("actors: announce cluster member %s in %s: %w", p.self.ID, p.kv.Bucket(), err)
	}

	p.cancel = cancel
	p.done = make(chan struct{})
	go p.run(ctx, c)

	return nil
}

// Announcing this member puts its first record, up to announceAttempts
// times, each bounded by announceTimeout: the members bucket may have been
// created a moment ago on servers that still elect its leader.
const (
	announceAttempts = 6
	announceTimeout  = 5 * time.Second
)

// announce puts this member's first record, trying again after errors that
// a starting NATS cluster returns.
func (p *natsMembership) announce(ctx context.Context, value []byte) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, announceTimeout)
		_, err := p.kv.Put(actx, p.key(), value)
		cancel()
		if err == nil || attempt == announceAttempts || !persistence.Transient(err) {
			return err
		}

		p.log.Warn("announcing this cluster member failed; retrying", "member", p.self.ID, "attempt", attempt, "error", err)
		time.Sleep(time.Second)
	}
}

// StartClient is not supported: every LiveVote process is a full member.
func (p *natsMembership) StartClient(*cluster.Cluster) error {
	return errors.New("actors: the NATS membership provider runs members only")
}

// Shutdown stops the heartbeat. A graceful shutdown also deletes the
// member's record, so the others drop it without waiting for ttl.
func (p *natsMembership) Shutdown(graceful bool) error {
	p.mu.Lock()
	if p.closed || p.cancel == nil {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	p.cancel()
	<-p.done
	if !graceful {
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err := p.kv.Delete(ctx, p.key())
	if err != nil {
		return fmt.Errorf("actors: remove cluster member %s: %w", p.self.ID, err)
	}

	return nil
}

func (p *natsMembership) key() string {
	return "member." + p.self.ID
}

// seenMember is a member record with the local time its latest update
// arrived.
type seenMember struct {
	record memberRecord
	seen   time.Time
}

// run puts the heartbeat and applies the watched records until ctx ends.
// The heartbeat has a goroutine of its own, so that it goes on while the
// watch is restarted: creating a watcher can take seconds while JetStream
// elects a new leader, and a member silent for the member TTL is dropped.
// The watch starts a new watcher when the connection reconnects, because a
// watcher whose server went away recovers only after about 20 s.
func (p *natsMembership) run(ctx context.Context, c *cluster.Cluster) {
	defer close(p.done)

	var sees atomic.Pointer[[]string] // the ids last published, sent with each heartbeat
	var wg sync.WaitGroup
	wg.Go(func() { p.beat(ctx, &sees) })
	defer wg.Wait()

	reconnected := p.nc.StatusChanged(nats.CONNECTED)
	defer p.nc.RemoveStatusListener(reconnected)
	ticker := time.NewTicker(p.heartbeat)
	defer ticker.Stop()

	members := make(map[string]seenMember)
	var last []string
	for ctx.Err() == nil {
		// Without a watch this member's list may miss members that joined
		// meanwhile, so its heartbeat lists none: the others then ignore it
		// when they check whether they were dropped.
		sees.Store(nil)
		wctx, cancel := context.WithCancel(ctx)
		watcher, err := p.kv.WatchAll(wctx)
		if err != nil {
			cancel()
			p.log.Warn("watch of cluster members failed; retrying", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(p.heartbeat):
			}
			continue
		}
		// Without a watch this member saw no heartbeat, its own included,
		// so the time since the last watch counts as an outage: once its own
		// heartbeat shows up again, every peer gets a full TTL (see prune).
		p.wasCutOff = true
		last = p.follow(ctx, c, watcher, reconnected, ticker, members, last, &sees)
		cancel()
		_ = watcher.Stop()
	}
}

// beat puts this member's record every heartbeat until ctx ends, listing
// the member ids stored in sees.
func (p *natsMembership) beat(ctx context.Context, sees *atomic.Pointer[[]string]) {
	ticker := time.NewTicker(p.heartbeat)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}

		rec := p.self
		if ids := sees.Load(); ids != nil {
			rec.Sees = *ids
		}
		value, _ := json.Marshal(rec) // a record of strings always encodes
		hctx, cancel := context.WithTimeout(ctx, p.heartbeat)
		_, err := p.kv.Put(hctx, p.key(), value)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.log.Warn("cluster heartbeat failed", "member", p.self.ID, "error", err)
		}
	}
}

// follow runs one watcher until ctx ends, the watcher closes or the
// connection reconnects, and returns the ids last published. It also stores
// them in sees for the heartbeat, or nil while this member is cut off.
func (p *natsMembership) follow(ctx context.Context, c *cluster.Cluster, watcher jetstream.KeyWatcher,
	reconnected <-chan nats.Status, ticker *time.Ticker, members map[string]seenMember, last []string,
	sees *atomic.Pointer[[]string]) []string {
	initial := true
	publish := func() {
		last = p.publish(c, members, last)
		if p.wasCutOff {
			// While its own heartbeats do not come back, this member's list
			// is frozen and may be stale, so its heartbeat lists no one.
			sees.Store(nil)
			return
		}
		ids := last
		sees.Store(&ids)
	}
	for {
		select {
		case <-ctx.Done():
			return last
		case <-reconnected:
			p.log.Info("restarting the watch of cluster members after reconnect")
			return last
		case entry, ok := <-watcher.Updates():
			if !ok {
				return last
			}
			if entry == nil {
				initial = false
				publish()
				continue
			}
			p.apply(members, entry, initial)
			if !initial {
				publish()
			}
		case <-ticker.C:
			if !initial {
				publish()
			}
		}
	}
}

// apply records one watched entry. Records of the initial values older than
// ttl by the server's clock belong to members that stopped long ago.
func (p *natsMembership) apply(members map[string]seenMember, entry jetstream.KeyValueEntry, initial bool) {
	if entry.Operation() != jetstream.KeyValuePut {
		id := strings.TrimPrefix(entry.Key(), "member.")
		delete(members, id)
		p.removed[id] = true
		return
	}

	var rec memberRecord
	err := json.Unmarshal(entry.Value(), &rec)
	if err != nil || rec.ID == "" || "member."+rec.ID != entry.Key() {
		p.log.Warn("ignoring a malformed cluster member record", "key", entry.Key(), "error", err)
		return
	}
	if rec.Cluster != p.self.Cluster {
		return
	}
	if initial && time.Since(entry.Created()) > p.ttl {
		return
	}
	if p.removed[rec.ID] {
		// Proto.Actor never lets a member that left back in, so neither
		// does this list; the member notices and restarts.
		return
	}

	members[rec.ID] = seenMember{record: rec, seen: time.Now()}
}

// leftOutBy returns how many peers leave this member out of their latest
// list, among the peers that publish a list and whose record is fresh. A
// stale record is the last word of a peer that may be gone, so it does not
// count.
func (p *natsMembership) leftOutBy(members map[string]seenMember, now time.Time) int {
	left := 0
	for id, m := range members {
		if id == p.self.ID || m.record.Sees == nil || now.Sub(m.seen) > freshHeartbeats*p.heartbeat {
			continue
		}
		if !slices.Contains(m.record.Sees, p.self.ID) {
			left++
		}
	}

	return left
}

// checkDropped notices when a peer keeps leaving this member out of its
// list for ttl. Proto.Actor blocks a member that left for good, so the peer
// will never take this member back: while this member stays, the two place
// shards differently and their activations keep claiming the same shards
// from each other. A dropped member therefore reports itself through
// onDropped, and the process must restart with a new member id.
func (p *natsMembership) checkDropped(members map[string]seenMember, now time.Time) {
	left := p.leftOutBy(members, now)
	if left == 0 {
		p.droppedSince = time.Time{}
		return
	}
	if p.droppedSince.IsZero() {
		p.droppedSince = now
		return
	}
	if now.Sub(p.droppedSince) > p.ttl && !p.dropped {
		p.dropped = true
		p.log.Error("another cluster member dropped this member; restart this process to rejoin",
			"member", p.self.ID, "left_out_by", left)
		p.onDropped()
	}
}

// freshHeartbeats is how many heartbeat periods this member's own latest
// heartbeat may be old before the member stops dropping others: when its
// own heartbeats do not come back, the bucket or the connection is failing,
// as while JetStream elects a new leader after a server loss, and the
// others' silence says nothing about them.
const freshHeartbeats = 3

// prune drops the members silent for ttl, unless this member's own
// heartbeats are not coming back, and reports whether they are not.
func (p *natsMembership) prune(members map[string]seenMember, now time.Time) bool {
	self, ok := members[p.self.ID]
	cutOff := !ok || now.Sub(self.seen) > freshHeartbeats*p.heartbeat
	if cutOff {
		p.wasCutOff = true
	} else if p.wasCutOff {
		// The outage that silenced this member silenced the others too, and
		// their heartbeats come back one by one: each gets a full ttl from
		// now before it counts as gone.
		p.wasCutOff = false
		for id, m := range members {
			m.seen = now
			members[id] = m
		}
		p.droppedSince = time.Time{}
	}
	if !cutOff {
		for id, m := range members {
			if now.Sub(m.seen) > p.ttl {
				p.log.Warn("cluster member missed its heartbeats; removing it", "member", id,
					"address", fmt.Sprintf("%s:%d", m.record.Host, m.record.Port), "silent_for", now.Sub(m.seen).Round(time.Millisecond))
				delete(members, id)
				p.removed[id] = true
			}
		}
	}

	if !cutOff {
		p.checkDropped(members, now)
	}

	return cutOff
}

// publish prunes the member list and hands it to the cluster when it
// changed. It returns the ids it published.
func (p *natsMembership) publish(c *cluster.Cluster, members map[string]seenMember, last []string) []string {
	now := time.Now()
	cutOff := p.prune(members, now)
	list, placement, ids, leftOut := p.lists(members, now)
	if slices.Equal(ids, last) && leftOut == p.leftOut {
		return last
	}
	p.leftOut = leftOut

	p.log.Info("cluster members changed", "members", len(list), "cut_off", cutOff, "left_out", leftOut)
	p.onMembers(placement)
	c.MemberList.UpdateClusterTopology(list)

	return ids
}

// lists returns the member list with this member in it, the list for shard
// placement, the sorted ids of the first, and whether the second leaves
// this member out.
//
// While any fresh peer leaves this member out, so does the placement list:
// the peer places this member's shards elsewhere, and placing them here as
// well would start a second activation that claims each of them back. Such
// a member serves its sockets through the others until every peer lists it
// again or checkDropped gives up.
func (p *natsMembership) lists(members map[string]seenMember, now time.Time) (list, placement cluster.Members, ids []string, leftOut bool) {
	self, ok := members[p.self.ID]
	members[p.self.ID] = seenMember{record: p.self, seen: self.seen}
	defer func() {
		if !ok {
			delete(members, p.self.ID)
		}
	}()
	leftOut = p.leftOutBy(members, now) > 0

	for _, m := range members {
		member := &cluster.Member{Id: m.record.ID, Host: m.record.Host, Port: int32(m.record.Port), Kinds: m.record.Kinds}
		list = append(list, member)
		if !leftOut || m.record.ID != p.self.ID {
			placement = append(placement, member)
		}
		ids = append(ids, m.record.ID)
	}
	slices.Sort(ids)

	return list, placement, ids, leftOut
}

package actors

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
)

// Cluster kinds and the aggregator grain's identity.
const (
	shardKind          = "shard"
	aggregatorKind     = "aggregator"
	aggregatorIdentity = "results"
)

// Cluster mode defaults.
const (
	DefaultHeartbeat = 500 * time.Millisecond
	DefaultMemberTTL = 5 * time.Second
)

// ClusterConfig turns a System into one member of a Proto.Actor cluster.
// Shards and the aggregator become grains that the cluster places on its
// members, and every member routes votes to the member that has the shard.
// Members find each other through a KV bucket of the Store, so the NATS
// servers are the only shared infrastructure.
type ClusterConfig struct {
	// Name is the cluster name. Members with another name ignore each
	// other. Required.
	Name string

	// Addr is the host:port on which this member's Proto.Actor remote
	// listens, such as 127.0.0.1:8091. Other members dial it, so it must be
	// reachable from them. Port 0 picks a free port. Required.
	Addr string

	// Advertise, when set, is the host:port that the other members dial
	// instead of Addr, such as the address of a NAT, container port mapping
	// or proxy in front of it. Addr may then be a wildcard such as
	// 0.0.0.0:8091.
	Advertise string

	// Heartbeat is how often the member renews its record. Zero means
	// 500ms.
	Heartbeat time.Duration

	// MemberTTL is how long a member may miss its heartbeats before the
	// others drop it and take over its shards. Zero means 5s.
	MemberTTL time.Duration
}

func (c ClusterConfig) withDefaults() (ClusterConfig, string, int, error) {
	if c.Name == "" {
		return c, "", 0, fmt.Errorf("%w: Cluster.Name is empty; give every member the same cluster name", ErrInvalidConfig)
	}
	host, portText, err := net.SplitHostPort(c.Addr)
	port, perr := strconv.Atoi(portText)
	// An empty host listens on every interface, which only an advertised
	// address makes reachable for the others.
	if err != nil || perr != nil || port < 0 || port > 65535 || (host == "" && c.Advertise == "") {
		return c, "", 0, fmt.Errorf("%w: Cluster.Addr %q is not host:port; use an address such as 127.0.0.1:8091", ErrInvalidConfig, c.Addr)
	}
	if c.Advertise != "" {
		ahost, aport, err := net.SplitHostPort(c.Advertise)
		n, perr := strconv.Atoi(aport)
		if err != nil || perr != nil || n < 1 || n > 65535 || ahost == "" {
			return c, "", 0, fmt.Errorf("%w: Cluster.Advertise %q is not host:port with a port from 1 to 65535; use the address the other members dial, such as 10.0.0.5:8091", ErrInvalidConfig, c.Advertise)
		}
	}
	if c.Heartbeat < 0 || c.MemberTTL < 0 {
		return c, "", 0, fmt.Errorf("%w: Cluster.Heartbeat %s and MemberTTL %s must not be negative", ErrInvalidConfig, c.Heartbeat, c.MemberTTL)
	}
	c.Heartbeat = cmp.Or(c.Heartbeat, DefaultHeartbeat)
	c.MemberTTL = cmp.Or(c.MemberTTL, DefaultMemberTTL)
	if c.MemberTTL < 3*c.Heartbeat {
		return c, "", 0, fmt.Errorf("%w: Cluster.MemberTTL %s is below three heartbeats of %s; raise it", ErrInvalidConfig, c.MemberTTL, c.Heartbeat)
	}

	return c, host, port, nil
}

// clusterState is the part of a System that only cluster mode uses.
type clusterState struct {
	member   *cluster.Cluster
	provider *natsMembership

	// rdv picks the member that owns each grain, from the same member list
	// and the same hash as the disthash placement actors. Lookups go through
	// it rather than disthash's Manager.Get, whose member table is swapped
	// without a lock and whose request to a dead member waits 5 s.
	rdv *cluster.Rendezvous

	pids      []atomic.Pointer[actor.PID] // cached PID of each shard grain
	resolveMu []sync.Mutex                // one lookup per shard at a time
	aggPID    atomic.Pointer[actor.PID]

	localMu sync.Mutex
	local   map[int]*actor.PID // shard grains active on this member

	pollsMu sync.Mutex
	polls   map[string]PollInfo

	publishMu sync.Mutex // serializes publishStored

	dropped chan struct{} // closed when the other members dropped this one

	cancel context.CancelFunc
	done   chan struct{}
}

// startCluster starts the actor system as a cluster member, then the
// results watch and the loop that keeps the aggregator grain active.
func (s *System) startCluster(ctx context.Context, m *metrics) error {
	cc, host, port, err := s.cfg.Cluster.withDefaults()
	if err != nil {
		return err
	}
	s.metrics = m

	kv, err := s.cfg.Store.Members(ctx)
	if err != nil {
		return err
	}

	c := &clusterState{
		pids:      make([]atomic.Pointer[actor.PID], s.cfg.Shards),
		resolveMu: make([]sync.Mutex, s.cfg.Shards),
		local:     make(map[int]*actor.PID),
		polls:     make(map[string]PollInfo),
		dropped:   make(chan struct{}),
	}
	c.rdv = cluster.NewRendezvous()
	// A new placement list can move shards without a change of Proto.Actor's
	// topology, as when this member starts or stops leaving itself out, so
	// the cached activations are dropped with each list.
	onPlacement := func(members cluster.Members) {
		c.rdv.UpdateMembers(members)
		s.forgetPIDs()
	}
	c.provider = newNATSMembership(s.cfg.Store.Conn(), kv, cc.Heartbeat, cc.MemberTTL, onPlacement,
		func() { close(c.dropped) }, s.log.With("component", "membership"))
	s.clu = c

	template := &shardConfig{index: -1, logger: s.log, grain: &grainConfig{system: s}}
	shardProps := actor.PropsFromProducer(func() actor.Actor { return newShard(template) },
		actor.WithReceiverMiddleware(s.cfg.shardMiddleware...))
	acfg := s.aggregatorConfig()
	acfg.polls = s.clusterPolls
	acfg.superseded = s.forgetPID
	// Every member publishes from the results watch, so the grain keeps its
	// documents apart from this member's cache.
	acfg.publish = nil
	acfg.cache = newResultsCache()
	aggProps := actor.PropsFromProducer(func() actor.Actor { return newAggregator(acfg) })

	var remoteOpts []remote.ConfigOption
	if cc.Advertise != "" {
		remoteOpts = append(remoteOpts, remote.WithAdvertisedHost(cc.Advertise))
	}
	remoteCfg := remote.Configure(host, port, remoteOpts...)
	clusterCfg := cluster.Configure(cc.Name, c.provider, disthash.New(), remoteCfg,
		cluster.WithKinds(cluster.NewKind(shardKind, shardProps), cluster.NewKind(aggregatorKind, aggProps)))
	c.member = cluster.New(s.actors, clusterCfg)

	err = startMember(c.member)
	if err != nil {
		return fmt.Errorf("actors: join cluster %q at %s: %w", cc.Name, cc.Addr, err)
	}

	if s.cfg.Registerer != nil {
		err = s.cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "livevote_cluster_members",
			Help: "Hub processes in the cluster that this hub sees, itself included.",
		}, func() float64 { return float64(s.ClusterMembers()) }))
		if err != nil {
			return fmt.Errorf("actors: register cluster metrics: %w", err)
		}
		err = s.cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "livevote_cluster_local_shards",
			Help: "Shard grains active in this hub process.",
		}, func() float64 { return float64(s.LocalShards()) }))
		if err != nil {
			return fmt.Errorf("actors: register cluster metrics: %w", err)
		}
	}

	s.actors.EventStream.Subscribe(func(ev any) {
		if _, ok := ev.(*cluster.ClusterTopology); ok {
			s.forgetPIDs()
		}
	})

	wctx, cancel := context.WithCancel(s.baseCtx)
	c.cancel = cancel
	c.done = make(chan struct{})
	loaded := make(chan struct{})
	go func() {
		defer close(c.done)
		var wg sync.WaitGroup
		wg.Go(func() { s.watchResults(wctx, loaded) })
		wg.Go(func() { s.touchAggregator(wctx) })
		wg.Wait()
	}()

	go func() {
		select {
		case <-loaded:
			close(s.readyDone)
			s.log.Info("cluster member ready", "cluster", cc.Name, "address", s.actors.Address())
		case <-wctx.Done():
		}
	}()

	return nil
}

// startMember runs StartMember, which panics on a provider error.
func startMember(c *cluster.Cluster) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	c.StartMember()

	return nil
}

// aggregatorConfig returns the configuration of the aggregator actor.
func (s *System) aggregatorConfig() *aggregatorConfig {
	return &aggregatorConfig{
		store:        s.cfg.Store,
		logger:       s.log,
		shardCount:   s.cfg.Shards,
		gather:       s.gatherTotals,
		interval:     s.cfg.BroadcastInterval,
		roundTimeout: min(s.cfg.BroadcastInterval/2, 2*time.Second),
		ioTimeout:    s.cfg.AppendTimeout,
		publish:      s.cfg.Publish,
		cache:        s.results,
		rounds:       &s.rounds,
		slowSkips:    &s.slowSkips,
		baseCtx:      s.baseCtx,
		kick:         s.kick,
	}
}

// shardPID returns the PID of shard i: the local actor in single-node mode,
// or the grain's current activation, looked up once and cached until the
// topology changes or a request to it fails. Nil means no member could
// activate it now.
func (s *System) shardPID(i int) *actor.PID {
	if s.clu == nil {
		return s.shards[i]
	}

	c := s.clu
	pid := c.pids[i].Load()
	if pid != nil {
		return pid
	}

	c.resolveMu[i].Lock()
	defer c.resolveMu[i].Unlock()
	pid = c.pids[i].Load()
	if pid == nil {
		pid = s.activate(ShardName(i), shardKind)
		if pid != nil {
			c.pids[i].Store(pid)
		}
	}

	return pid
}

// activationTimeout bounds one activation request to a grain's owner.
const activationTimeout = 2 * time.Second

// activate requests the grain's PID from the placement actor of its owner,
// which spawns the grain unless it runs already. Nil means no
// member owns it now or the owner did not answer in time.
func (s *System) activate(identity, kind string) *actor.PID {
	ci := cluster.NewClusterIdentity(identity, kind)
	owner := s.clu.rdv.GetByClusterIdentity(ci)
	if owner == "" {
		return nil
	}

	activator := actor.NewPID(owner, disthash.PartitionActivatorActorName)
	reply, err := ask(s.root, activator, &cluster.ActivationRequest{ClusterIdentity: ci}).
		wait(context.Background(), activator, activationTimeout)
	resp, ok := reply.(*cluster.ActivationResponse)
	if err != nil || !ok || resp.GetPid() == nil {
		s.log.Debug("grain activation failed", "identity", identity, "owner", owner, "error", err)
		return nil
	}

	return resp.GetPid()
}

// forgetPID drops the cached PID of shard i if it is still pid.
func (s *System) forgetPID(i int, pid *actor.PID) {
	if s.clu != nil {
		s.clu.pids[i].CompareAndSwap(pid, nil)
	}
}

func (s *System) forgetPIDs() {
	for i := range s.clu.pids {
		s.clu.pids[i].Store(nil)
	}
	s.clu.aggPID.Store(nil)
}

// aggregatorPID returns the PID of the aggregator: the local actor, or the
// grain's activation.
func (s *System) aggregatorPID() *actor.PID {
	if s.clu == nil {
		return s.aggregator
	}

	pid := s.clu.aggPID.Load()
	if pid == nil {
		pid = s.activate(aggregatorIdentity, aggregatorKind)
		if pid != nil {
			s.clu.aggPID.Store(pid)
		}
	}

	return pid
}

// ask sends message to pid with a fresh reply PID, in its wire form when pid
// is on another member.
func (s *System) ask(pid *actor.PID, message any) *pendingReply {
	if s.clu != nil && pid.Address != s.actors.Address() {
		message = toWire(message)
	}

	return ask(s.root, pid, message)
}

// send sends message to pid without a reply.
func (s *System) send(pid *actor.PID, message any) {
	if s.clu != nil && pid.Address != s.actors.Address() {
		message = toWire(message)
	}
	s.root.Send(pid, message)
}

func (s *System) addLocal(i int, pid *actor.PID) {
	s.clu.localMu.Lock()
	s.clu.local[i] = pid
	s.clu.localMu.Unlock()
}

func (s *System) removeLocal(i int, pid *actor.PID) {
	s.clu.localMu.Lock()
	if current, ok := s.clu.local[i]; ok && current.Equal(pid) {
		delete(s.clu.local, i)
	}
	s.clu.localMu.Unlock()
}

// localShards returns the shard grains active on this member.
func (s *System) localShards() map[int]*actor.PID {
	s.clu.localMu.Lock()
	defer s.clu.localMu.Unlock()

	return maps.Clone(s.clu.local)
}

// clusterPolls returns the polls registered on this member, which the
// aggregator grain reads when it runs here.
func (s *System) clusterPolls() []PollInfo {
	s.clu.pollsMu.Lock()
	defer s.clu.pollsMu.Unlock()

	return slices.Collect(maps.Values(s.clu.polls))
}

func (s *System) clusterRegister(p PollInfo) {
	s.clu.pollsMu.Lock()
	old, seen := s.clu.polls[p.ID]
	if seen && old.Closed {
		p.Closed = true
	}
	s.clu.polls[p.ID] = p
	s.clu.pollsMu.Unlock()

	// A lookup may wait for an activation, so the close goes out from its
	// own goroutine and the caller, such as the catalog watch, goes on.
	if p.Closed && !(seen && old.Closed) {
		go func() {
			for i := range s.cfg.Shards {
				if s.stopping.Load() {
					return
				}
				pid := s.shardPID(i)
				if pid != nil {
					s.send(pid, &closeRequest{poll: p.ID})
				}
			}
		}()
	}
}

func (s *System) pollEvent(poll string) string {
	s.clu.pollsMu.Lock()
	defer s.clu.pollsMu.Unlock()

	return s.clu.polls[poll].Event
}

// touchAggregator sends the aggregator grain a message every interval, so
// that some member activates it again after its member died.
func (s *System) touchAggregator(ctx context.Context) {
	ticker := time.NewTicker(s.cfg.BroadcastInterval)
	defer ticker.Stop()

	for {
		pid := s.aggregatorPID()
		if pid != nil {
			s.send(pid, &aggregatorTouch{})
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// watchResults hands every stored results document to the results cache and
// to Publish, on every member, so sockets on any member see the same
// documents. loaded is closed once the documents stored before the watch
// are in the cache.
func (s *System) watchResults(ctx context.Context, loaded chan<- struct{}) {
	err := s.cfg.Store.WatchResults(ctx, s.onStoredResults, func() { close(loaded) })
	if err != nil {
		s.log.Error("results watch ended; documents stored by other members no longer reach this one", "error", err)
	}
}

func (s *System) onStoredResults(poll string, data []byte) {
	var doc Results
	err := json.Unmarshal(data, &doc)
	if err != nil {
		s.log.Warn("ignoring an unreadable results document", "poll", poll, "error", err)
		return
	}
	doc.Poll = poll
	doc.Event = s.pollEvent(poll)
	s.publishStored(doc)
}

// publishStored caches a stored document and publishes it unless the cache
// already holds it or a newer one. The mutex keeps Publish calls apart.
func (s *System) publishStored(doc Results) {
	s.clu.publishMu.Lock()
	defer s.clu.publishMu.Unlock()

	if s.results.put(doc) && s.cfg.Publish != nil && !s.stopping.Load() {
		s.cfg.Publish(doc)
	}
}

// stopCluster leaves the cluster: the member record goes first, so others
// take over the shards at once, then the local grains reply to their votes
// and save snapshots, and the actor system stops.
func (s *System) stopCluster(ctx context.Context) []error {
	c := s.clu
	errs := []error{c.provider.Shutdown(true)}

	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.waitDefault + snapshotTimeout)
	}
	local := s.localShards()
	replies := make(map[int]*pendingReply, len(local))
	for i, pid := range local {
		replies[i] = ask(s.root, pid, &stopRequest{deadline: deadline})
	}
	for i, pending := range replies {
		reply, err := pending.wait(ctx, local[i], time.Until(deadline))
		stopped, ok := reply.(*stopReply)
		switch {
		case err != nil && !errors.Is(err, ErrTimeout):
			errs = append(errs, fmt.Errorf("actors: stop: %w", err))
		case err != nil:
			errs = append(errs, err)
		case !ok:
			errs = append(errs, fmt.Errorf("%w: stop %s: unexpected reply %T", ErrTimeout, ShardName(i), reply))
		case stopped.err != nil:
			errs = append(errs, fmt.Errorf("actors: stop: %w", stopped.err))
		}
	}

	c.cancel()
	<-c.done
	errs = append(errs, s.tasks.closeAndWait(ctx, s.cancelBase))
	c.member.Shutdown(true)

	return errs
}

// decodeReply turns a reply that crossed the wire back into its Go value.
func decodeReply(msg any) any {
	m, ok := msg.(*anypb.Any)
	if !ok {
		return msg
	}
	decoded, err := fromWire(m)
	if err != nil {
		return fmt.Errorf("%w: %v", errRemote, err)
	}

	return decoded
}

// logCluster adds the cluster fields to the start log.
func (s *System) logCluster() []any {
	if s.clu == nil {
		return nil
	}

	return []any{slog.String("cluster", s.cfg.Cluster.Name), slog.String("address", s.actors.Address())}
}

// ClusterMembers returns the number of cluster members in this member's
// list, itself included, or 1 in single-node mode.
func (s *System) ClusterMembers() int {
	if s.clu == nil {
		return 1
	}

	return s.clu.member.MemberList.Length()
}

// LocalShards returns the number of shards active in this process.
func (s *System) LocalShards() int {
	if s.clu == nil {
		return s.cfg.Shards
	}

	return len(s.localShards())
}

// ShardAddress returns the Proto.Actor address of the process that holds
// shard i, activating the shard if needed, or "" when no member holds it
// now. In single-node mode it is this process's address.
func (s *System) ShardAddress(i int) string {
	if i < 0 || i >= s.cfg.Shards {
		return ""
	}
	pid := s.shardPID(i)
	if pid == nil {
		return ""
	}

	return pid.Address
}

// Address returns this process's Proto.Actor address.
func (s *System) Address() string {
	return s.actors.Address()
}

// Dropped is closed when another cluster member dropped this one for
// good, which Proto.Actor does not undo: the process must restart to
// rejoin. It is nil in single-node mode, so a select never picks it.
func (s *System) Dropped() <-chan struct{} {
	if s.clu == nil {
		return nil
	}

	return s.clu.dropped
}

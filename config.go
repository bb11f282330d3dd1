package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/livevote/livevote/hub"
	"github.com/livevote/livevote/persistence"
	"github.com/livevote/livevote/transport"
)

// config is LiveVote's configuration. Every flag can also be set in the environment as
// LIVEVOTE_<NAME> (upper case, dashes as underscores); a flag on the command line wins.
type config struct {
	Addr              string
	Data              string
	NatsURL           string
	NatsReplicas      int
	ClusterName       string
	ClusterAddr       string
	Shards            int
	BroadcastInterval time.Duration
	Sync              persistence.SyncMode
	Demo              bool
	AllowedOrigins    []string
	OperatorKey       string
	VoteRate          float64
	VoteBurst         int
	SessionRate       float64
	SessionBurst      int
	MaxConnsPerIP     int
	PingInterval      time.Duration
	LogLevel          string
	LogFormat         string
	ShutdownTimeout   time.Duration
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var (
		cfg     config
		sync    string
		origins string
	)
	fs := flag.NewFlagSet("livevote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", ":8080", "HTTP and WebSocket listen address")
	fs.StringVar(&cfg.Data, "data", "./data", "directory of the embedded JetStream store and local state")
	fs.StringVar(&cfg.NatsURL, "nats-url", "", "external NATS server URLs, comma separated; empty starts the embedded server")
	fs.IntVar(&cfg.NatsReplicas, "nats-replicas", 1, "replicas of the vote stream and KV buckets on an external NATS cluster: 1, 3 or 5")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "join the hub cluster of this name; empty runs a single hub. Needs -nats-url and -cluster-addr")
	fs.StringVar(&cfg.ClusterAddr, "cluster-addr", "127.0.0.1:8091", "host:port of this hub's Proto.Actor endpoint, which the other hubs dial (cluster mode)")
	fs.IntVar(&cfg.Shards, "shards", 64, "number of shard actors; fixed for the life of a data directory")
	fs.DurationVar(&cfg.BroadcastInterval, "broadcast-interval", 5*time.Second, "how often merged results are sent to sockets")
	fs.StringVar(&sync, "sync", "always", "always: fsync before each vote is acknowledged; interval: JetStream's periodic fsync")
	fs.BoolVar(&cfg.Demo, "demo", false, "create a sample event with an open poll at start and print its links")
	fs.StringVar(&origins, "allowed-origins", "", "extra host patterns allowed cross-origin, comma separated (e.g. \"*.example.com,app.example.org:8443\"); the same host is always allowed")
	fs.StringVar(&cfg.OperatorKey, "operator-key", "", "key that the operator dashboard's data requires (Authorization: Bearer <key>); empty leaves /dashboard open")
	fs.Float64Var(&cfg.VoteRate, "vote-rate", hub.DefaultVoteRate, "votes per second allowed per voter session, after the burst")
	fs.IntVar(&cfg.VoteBurst, "vote-burst", hub.DefaultVoteBurst, "votes a voter session may send at once")
	fs.Float64Var(&cfg.SessionRate, "session-rate", transport.DefaultSessionRate, "new voter sessions per second allowed per client IP, after the burst")
	fs.IntVar(&cfg.SessionBurst, "session-burst", transport.DefaultSessionBurst, "new voter sessions a client IP may create at once")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", transport.DefaultMaxConnsPerIP, "open TCP connections allowed per client IP; a venue's NAT puts a whole room on one IP")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", transport.DefaultPingInterval, "how often idle sockets are pinged; a peer that does not answer within one more interval is dropped")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful shutdown may take before sockets are dropped")

	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: LiveVote takes only flags (see -help)", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return config{}, err
	}

	mode, err := persistence.ParseSyncMode(sync)
	if err != nil {
		return config{}, fmt.Errorf("-sync: %w", err)
	}
	cfg.Sync = mode
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, cfg.validate()
}

// applyEnv sets every flag that was not given on the command line from its LIVEVOTE_
// environment variable, when that is set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := envName(f.Name)
		value := getenv(name)
		if value == "" {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", name, value, err))
		}
	})
	return errors.Join(errs...)
}

func envName(flagName string) string {
	return "LIVEVOTE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c config) validate() error {
	if c.Shards < 1 || c.Shards > persistence.MaxShards {
		return fmt.Errorf("-shards %d is out of range: use 1 to %d", c.Shards, persistence.MaxShards)
	}

	if c.BroadcastInterval < 100*time.Millisecond || c.BroadcastInterval > time.Hour {
		return fmt.Errorf("-broadcast-interval %s is out of range: use 100ms to 1h", c.BroadcastInterval)
	}

	if c.NatsURL == "" && strings.TrimSpace(c.Data) == "" {
		return errors.New("-data is empty: name a directory for the embedded store, or set -nats-url")
	}

	if c.NatsReplicas < 1 || c.NatsReplicas > 5 {
		return fmt.Errorf("-nats-replicas %d is out of range: use 1 to 5, at most the number of NATS servers (3 for a 3-server cluster)", c.NatsReplicas)
	}
	if c.NatsReplicas > 1 && c.NatsURL == "" {
		return fmt.Errorf("-nats-replicas %d needs an external NATS cluster: set -nats-url", c.NatsReplicas)
	}
	if c.ClusterName != "" {
		if c.NatsURL == "" {
			return fmt.Errorf("-cluster-name %q needs -nats-url: the hubs of a cluster share one NATS cluster, and the embedded server serves one process", c.ClusterName)
		}
		host, _, err := net.SplitHostPort(c.ClusterAddr)
		if err != nil || host == "" {
			return fmt.Errorf("-cluster-addr %q is not host:port: use an address the other hubs can reach, such as 10.0.0.5:8091", c.ClusterAddr)
		}
		// The hub announces this address to the others, which dial it, so a
		// wildcard that means "every interface here" would reach nothing.
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("-cluster-addr %q is a wildcard address, which the other hubs cannot dial: use this machine's address on their network, such as 10.0.0.5:8091", c.ClusterAddr)
		}
	}

	if c.VoteRate <= 0 || c.VoteBurst < 1 {
		return fmt.Errorf("-vote-rate %g and -vote-burst %d must be positive", c.VoteRate, c.VoteBurst)
	}

	if c.SessionRate <= 0 || c.SessionBurst < 1 {
		return fmt.Errorf("-session-rate %g and -session-burst %d must be positive", c.SessionRate, c.SessionBurst)
	}

	if c.MaxConnsPerIP < 1 {
		return fmt.Errorf("-max-conns-per-ip %d must be at least 1", c.MaxConnsPerIP)
	}

	if c.PingInterval < 10*time.Millisecond {
		return fmt.Errorf("-ping-interval %s is too short: use at least 10ms (30s suits phones)", c.PingInterval)
	}

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("-log-level %q is unknown: use debug, info, warn or error", c.LogLevel)
	}

	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("-log-format %q is unknown: use text or json", c.LogFormat)
	}

	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %s must be positive", c.ShutdownTimeout)
	}
	return nil
}

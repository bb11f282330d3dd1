package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
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
	ClusterAdvertise  string
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
	// A bad flag gets its error and a pointer to -help, not the whole list
	// of flags; -help prints the list.
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Addr, "addr", ":8080", "HTTP and WebSocket listen address")
	fs.StringVar(&cfg.Data, "data", "./data", "directory of the embedded JetStream store and local state")
	fs.StringVar(&cfg.NatsURL, "nats-url", "", "external NATS server URLs, comma separated; empty starts the embedded server")
	intVar(fs, &cfg.NatsReplicas, "nats-replicas", 1, "replicas of the vote stream and KV buckets on an external NATS cluster: 1, 3 or 5")
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "join the hub cluster of this name; empty runs a single hub. Needs -nats-url and -cluster-addr")
	fs.StringVar(&cfg.ClusterAddr, "cluster-addr", "127.0.0.1:8091", "host:port of this hub's Proto.Actor endpoint, which the other hubs dial (cluster mode)")
	fs.StringVar(&cfg.ClusterAdvertise, "cluster-advertise", "", "host:port that the other hubs dial instead of -cluster-addr, such as a container's mapped port; -cluster-addr may then be a wildcard such as 0.0.0.0:8091")
	intVar(fs, &cfg.Shards, "shards", 64, "number of shard actors; fixed for the life of a data directory")
	durationVar(fs, &cfg.BroadcastInterval, "broadcast-interval", 5*time.Second, "how often merged results are sent to sockets")
	fs.StringVar(&sync, "sync", "always", "always: fsync before each vote is acknowledged; interval: JetStream's periodic fsync")
	fs.BoolVar(&cfg.Demo, "demo", false, "create a sample event with an open poll at start and print its links")
	fs.StringVar(&origins, "allowed-origins", "", "extra host patterns allowed cross-origin, comma separated (e.g. \"*.example.com,app.example.org:8443\"); the same host is always allowed")
	fs.StringVar(&cfg.OperatorKey, "operator-key", "", "key that the operator dashboard's data requires (Authorization: Bearer <key>); empty leaves /dashboard open")
	floatVar(fs, &cfg.VoteRate, "vote-rate", hub.DefaultVoteRate, "votes per second allowed per voter session, after the burst")
	intVar(fs, &cfg.VoteBurst, "vote-burst", hub.DefaultVoteBurst, "votes a voter session may send at once")
	floatVar(fs, &cfg.SessionRate, "session-rate", transport.DefaultSessionRate, "new voter sessions per second allowed per client IP, after the burst")
	intVar(fs, &cfg.SessionBurst, "session-burst", transport.DefaultSessionBurst, "new voter sessions a client IP may create at once")
	intVar(fs, &cfg.MaxConnsPerIP, "max-conns-per-ip", transport.DefaultMaxConnsPerIP, "open TCP connections allowed per client IP; a venue's NAT puts a whole room on one IP")
	durationVar(fs, &cfg.PingInterval, "ping-interval", transport.DefaultPingInterval, "how often idle sockets are pinged; a peer that does not answer within one more interval is dropped")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	durationVar(fs, &cfg.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful shutdown may take before sockets are dropped")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage of livevote (every flag can also be set as LIVEVOTE_<FLAG>, such as LIVEVOTE_BROADCAST_INTERVAL=2s):")
			fs.PrintDefaults()
			return config{}, err
		}
		return config{}, fmt.Errorf("%w; run livevote -help for the flags", err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: LiveVote takes only flags (see -help)", fs.Arg(0))
	}
	fromEnv, err := applyEnv(fs, getenv)
	if err != nil {
		return config{}, err
	}

	mode, err := persistence.ParseSyncMode(sync)
	if err != nil {
		return config{}, nameEnv(fmt.Errorf("-sync: %w", err), fromEnv)
	}
	cfg.Sync = mode
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, nameEnv(cfg.validate(), fromEnv)
}

// nameEnv adds to err, which names flags as "-name", the environment
// variables that set any of those flags, because the user who set one may
// not know the flag.
func nameEnv(err error, fromEnv map[string]string) error {
	if err == nil {
		return nil
	}

	// A flag counts when its name starts the message or follows a space, so
	// that -addr does not match inside -cluster-addr.
	message := " " + err.Error()
	var set []string
	for flagName, setting := range fromEnv {
		if strings.Contains(message, " -"+flagName+" ") || strings.Contains(message, " -"+flagName+":") {
			set = append(set, setting)
		}
	}
	if len(set) == 0 {
		return err
	}
	slices.Sort(set)

	return fmt.Errorf("%w (set by %s)", err, strings.Join(set, ", "))
}

// intValue is an int flag whose parse error names the expected form.
type intValue struct{ n *int }

func intVar(fs *flag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var(intValue{p}, name, usage+"; a whole `number`")
}

func (v intValue) String() string {
	if v.n == nil {
		return "0"
	}
	return strconv.Itoa(*v.n)
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not a whole number: use digits only, such as 64", s)
	}
	*v.n = n
	return nil
}

// floatValue is a float64 flag whose parse error names the expected form.
type floatValue struct{ f *float64 }

func floatVar(fs *flag.FlagSet, p *float64, name string, value float64, usage string) {
	*p = value
	fs.Var(floatValue{p}, name, usage+"; a `number`")
}

func (v floatValue) String() string {
	if v.f == nil {
		return "0"
	}
	return strconv.FormatFloat(*v.f, 'g', -1, 64)
}

func (v floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("%q is not a number: use a decimal number, such as 5 or 0.5", s)
	}
	*v.f = f
	return nil
}

// durationValue is a time.Duration flag whose parse error shows the
// expected form of a duration.
type durationValue struct{ d *time.Duration }

func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{p}, name, usage+"; a `duration` such as 5s or 250ms")
}

func (v durationValue) String() string {
	if v.d == nil {
		return "0s"
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: use a number with a unit, such as 5s, 250ms or 1m", s)
	}
	*v.d = d
	return nil
}

// applyEnv sets every flag that was not given on the command line from its LIVEVOTE_
// environment variable, when that is set. It returns, by flag name, the
// settings it applied, such as LIVEVOTE_SHARDS=16.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) (map[string]string, error) {
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	applied := make(map[string]string)
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
			return
		}
		applied[f.Name] = fmt.Sprintf("%s=%s", name, value)
	})
	return applied, errors.Join(errs...)
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
		if err != nil || (host == "" && c.ClusterAdvertise == "") {
			return fmt.Errorf("-cluster-addr %q is not host:port: use an address the other hubs can reach, such as 10.0.0.5:8091", c.ClusterAddr)
		}
		if c.ClusterAdvertise != "" {
			ahost, aport, err := net.SplitHostPort(c.ClusterAdvertise)
			port, perr := strconv.Atoi(aport)
			if err != nil || perr != nil || port < 1 || port > 65535 || ahost == "" {
				return fmt.Errorf("-cluster-advertise %q is not host:port with a port from 1 to 65535: use the address the other hubs dial, such as 10.0.0.5:8091", c.ClusterAdvertise)
			}
			host = ahost
		}
		// The hub announces this address to the others, which dial it, so a
		// wildcard that means "every interface here" would reach nothing.
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			if c.ClusterAdvertise != "" {
				return fmt.Errorf("-cluster-advertise %q is a wildcard address, which the other hubs cannot dial: use this machine's address on their network, such as 10.0.0.5:8091", c.ClusterAdvertise)
			}
			return fmt.Errorf("-cluster-addr %q is a wildcard address, which the other hubs cannot dial: use this machine's address on their network, such as 10.0.0.5:8091, or set -cluster-advertise", c.ClusterAddr)
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

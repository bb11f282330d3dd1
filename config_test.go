package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if cfg.Addr != ":8080" || cfg.Data != "./data" || cfg.Shards != 64 || cfg.BroadcastInterval != 5*time.Second || cfg.Sync != "always" || cfg.NatsURL != "" || cfg.Demo {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestParseConfigEnvironment(t *testing.T) {
	env := map[string]string{
		"LIVEVOTE_ADDR":               "127.0.0.1:9000",
		"LIVEVOTE_BROADCAST_INTERVAL": "2s",
		"LIVEVOTE_SHARDS":             "16",
		"LIVEVOTE_DEMO":               "true",
		"LIVEVOTE_ALLOWED_ORIGINS":    "a.example, b.example:8443",
	}
	getenv := func(name string) string { return env[name] }

	cfg, err := parseConfig([]string{"-shards", "32"}, getenv, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if cfg.Addr != "127.0.0.1:9000" {
		t.Errorf("addr %q, want the environment's", cfg.Addr)
	}
	if cfg.BroadcastInterval != 2*time.Second {
		t.Errorf("broadcast interval %s, want 2s", cfg.BroadcastInterval)
	}
	if cfg.Shards != 32 {
		t.Errorf("shards %d, want 32: the flag wins over LIVEVOTE_SHARDS", cfg.Shards)
	}
	if !cfg.Demo {
		t.Error("demo off, want LIVEVOTE_DEMO=true to turn it on")
	}
	if len(cfg.AllowedOrigins) != 2 || cfg.AllowedOrigins[1] != "b.example:8443" {
		t.Errorf("allowed origins %q", cfg.AllowedOrigins)
	}
}

func TestParseConfigRejectsBadValues(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string // the error names the bad value or setting
	}{
		{"zero shards", []string{"-shards", "0"}, nil, "-shards 0"},
		{"too many shards", []string{"-shards", "5000"}, nil, "-shards 5000"},
		{"unknown sync mode", []string{"-sync", "sometimes"}, nil, `"sometimes"`},
		{"tiny broadcast interval", []string{"-broadcast-interval", "1ms"}, nil, "-broadcast-interval 1ms"},
		{"bad environment value", nil, map[string]string{"LIVEVOTE_SHARDS": "many"}, `LIVEVOTE_SHARDS="many"`},
		{"unknown log level", []string{"-log-level", "loud"}, nil, `"loud"`},
		{"stray argument", []string{"serve"}, nil, `"serve"`},
		{"empty data without NATS", []string{"-data", " "}, nil, "-data is empty"},
		{"zero connections per IP", []string{"-max-conns-per-ip", "0"}, nil, "-max-conns-per-ip 0"},
		{"cluster on the embedded server", []string{"-cluster-name", "hall"}, nil, `-cluster-name "hall" needs -nats-url`},
		{"cluster address without port", []string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-addr", "127.0.0.1"}, nil, `-cluster-addr "127.0.0.1"`},
		{"wildcard cluster address", []string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-addr", "0.0.0.0:8091"}, nil, `-cluster-addr "0.0.0.0:8091" is a wildcard`},
		{"six replicas", []string{"-nats-url", "nats://127.0.0.1:4222", "-nats-replicas", "6"}, nil, "-nats-replicas 6"},
		{"replicas on the embedded server", []string{"-nats-replicas", "3"}, nil, "-nats-replicas 3 needs an external NATS cluster"},
		{"wildcard advertised address", []string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-addr", "0.0.0.0:8091", "-cluster-advertise", "0.0.0.0:8091"}, nil, `-cluster-advertise "0.0.0.0:8091" is a wildcard`},
		{"advertised address without a port", []string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-advertise", "10.0.0.5"}, nil, `-cluster-advertise "10.0.0.5" is not host:port`},
		{"advertised port 0", []string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-advertise", "10.0.0.5:0"}, nil, `-cluster-advertise "10.0.0.5:0"`},
		{"duration without a unit", []string{"-broadcast-interval", "2"}, nil, `"2" is not a duration: use a number with a unit, such as 5s`},
		{"duration in the environment", nil, map[string]string{"LIVEVOTE_PING_INTERVAL": "soon"}, `LIVEVOTE_PING_INTERVAL="soon": "soon" is not a duration`},
		{"word for a number", []string{"-shards", "many"}, nil, `"many" is not a whole number`},
		{"word for a rate", []string{"-vote-rate", "fast"}, nil, `"fast" is not a number`},
		{"environment value out of range", nil, map[string]string{"LIVEVOTE_VOTE_RATE": "-1"}, "(set by LIVEVOTE_VOTE_RATE=-1)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, func(name string) string { return tc.env[name] }, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

// TestParseConfigEnvNameMatchesWholeFlag sets LIVEVOTE_ADDR and a
// bad -cluster-addr: the error must not name the variable of -addr, whose
// name is part of -cluster-addr.
func TestParseConfigEnvNameMatchesWholeFlag(t *testing.T) {
	env := map[string]string{"LIVEVOTE_ADDR": ":9000"}
	_, err := parseConfig([]string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222", "-cluster-addr", "nohostport"},
		func(name string) string { return env[name] }, io.Discard)
	if err == nil {
		t.Fatal("accepted -cluster-addr nohostport")
	}
	if strings.Contains(err.Error(), "LIVEVOTE_ADDR") {
		t.Errorf("error %q names LIVEVOTE_ADDR, which set -addr, not -cluster-addr", err)
	}
}

// TestParseConfigErrorPrintsNoUsage checks that a bad flag gets one error
// line that points to -help instead of the list of every flag, and that
// -help prints that list.
// TestParseConfigWildcardWithAdvertise accepts a wildcard -cluster-addr
// when -cluster-advertise names the address the other hubs dial.
func TestParseConfigWildcardWithAdvertise(t *testing.T) {
	cfg, err := parseConfig([]string{"-cluster-name", "hall", "-nats-url", "nats://127.0.0.1:4222",
		"-cluster-addr", "0.0.0.0:8091", "-cluster-advertise", "10.0.0.5:18091"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if cfg.ClusterAddr != "0.0.0.0:8091" || cfg.ClusterAdvertise != "10.0.0.5:18091" {
		t.Errorf("cluster addr %q, advertise %q", cfg.ClusterAddr, cfg.ClusterAdvertise)
	}
}

func TestParseConfigErrorPrintsNoUsage(t *testing.T) {
	var stderr strings.Builder
	_, err := parseConfig([]string{"-shards", "x"}, func(string) string { return "" }, &stderr)
	if err == nil || !strings.Contains(err.Error(), "run livevote -help") {
		t.Errorf("error %v, want one that points to -help", err)
	}
	if stderr.Len() != 0 {
		t.Errorf("a bad flag wrote %d bytes to stderr, want none: %q", stderr.Len(), stderr.String())
	}

	stderr.Reset()
	_, err = parseConfig([]string{"-help"}, func(string) string { return "" }, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-help returned %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"-broadcast-interval duration", "-shards number", "LIVEVOTE_"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-help output lacks %q:\n%s", want, stderr.String())
		}
	}
}

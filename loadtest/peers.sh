#!/usr/bin/env bash
# peers.sh measures LiveVote's durable vote ingest beside peer systems on this machine,
# in one run, with the same client count. The peers are PostgreSQL hot-row UPDATE and append-only
# INSERT (synchronous_commit on), Redis INCR with and without appendfsync always, the
# raw JetStream publish ceiling with and without fsync before each ack, and LiveVote
# over WebSocket and HTTP (-sync always). Every server listens on 127.0.0.1 only, keeps
# its data in a temporary directory and is stopped by its pid at the end.
#
# Usage (as root, from the repository root):
#   bash loadtest/peers.sh [-clients 64] [-seconds 10] [-runs 3] [-out DIR]
# Set PEERS_SKIP_INSTALL=1 to skip apt-get when PostgreSQL and Redis are installed.
# It prints a markdown table of medians and writes every raw result under -out.
set -euo pipefail

CLIENTS=64
SECONDS_PER_RUN=10
RUNS=3
OUT=""
while [ $# -gt 0 ]; do
	case "$1" in
	-clients) CLIENTS="$2"; shift 2 ;;
	-seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
	-runs) RUNS="$2"; shift 2 ;;
	-out) OUT="$2"; shift 2 ;;
	*) echo "peers.sh: unknown argument $1 (use -clients N, -seconds N, -runs N, -out DIR)" >&2; exit 2 ;;
	esac
done
case "$CLIENTS$SECONDS_PER_RUN$RUNS" in *[!0-9]*) echo "peers.sh: -clients, -seconds and -runs take whole numbers" >&2; exit 2 ;; esac
if [ "$CLIENTS" -lt 1 ] || [ "$CLIENTS" -gt 1000 ] || [ "$SECONDS_PER_RUN" -lt 1 ] || [ "$SECONDS_PER_RUN" -gt 120 ] || [ "$RUNS" -lt 1 ] || [ "$RUNS" -gt 9 ]; then
	echo "peers.sh: use -clients 1..1000, -seconds 1..120, -runs 1..9" >&2
	exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/livevote-peers.XXXXXX)
chmod 755 "$WORK"
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
PIDS=()

stop_all() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	done
	PIDS=()
}
trap 'stop_all; rm -rf "$WORK/pg" "$WORK/redis" "$WORK/lv"' EXIT

install_peers() {
	if [ "${PEERS_SKIP_INSTALL:-0}" = 1 ]; then
		return
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql redis-server
}

# record NAME RUN THROUGHPUT P99_MS appends one measurement to the results file.
record() {
	printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$OUT/runs.tsv"
	printf '%-28s run %s: %12.0f per s, p99 %8.2f ms\n' "$1" "$2" "$3" "$4"
}

# ---- PostgreSQL ----
pg_run() { # NAME SCRIPT RUN
	local prefix="$WORK/pg/log-$1-$3"
	runuser -u postgres -- pgbench -n -h 127.0.0.1 -p 55432 -U postgres -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" \
		-f "$2" -l --log-prefix="$prefix" bench >"$OUT/pgbench-$1-$3.txt" 2>&1
	local tps p99
	tps=$(awk '/^tps = /{print $3}' "$OUT/pgbench-$1-$3.txt")
	p99=$(cat "$prefix".* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END{i=int(NR*0.99+0.999999); if(i<1)i=1; printf "%.3f", v[i]/1000}')
	rm -f "$prefix".*
	record "$1" "$3" "$tps" "$p99"
}

bench_postgres() {
	local bin
	bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
	mkdir -p "$WORK/pg"
	chown postgres "$WORK/pg"
	runuser -u postgres -- "$bin/initdb" -D "$WORK/pg/data" -U postgres >"$OUT/initdb.txt" 2>&1
	runuser -u postgres -- "$bin/postgres" -D "$WORK/pg/data" -h 127.0.0.1 -p 55432 -k "$WORK/pg" \
		-c synchronous_commit=on -c fsync=on -c max_connections=$((CLIENTS + 20)) >"$OUT/postgres.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 100); do runuser -u postgres -- "$bin/pg_isready" -q -h 127.0.0.1 -p 55432 && break; sleep 0.2; done
	runuser -u postgres -- psql -q -h 127.0.0.1 -p 55432 -U postgres -c "CREATE DATABASE bench"
	runuser -u postgres -- psql -q -h 127.0.0.1 -p 55432 -U postgres -d bench -c \
		"CREATE TABLE totals (option int PRIMARY KEY, votes bigint NOT NULL); INSERT INTO totals VALUES (1, 0);
		 CREATE TABLE ballots (id bigserial PRIMARY KEY, poll int NOT NULL, option int NOT NULL, at timestamptz NOT NULL DEFAULT now());"
	echo 'UPDATE totals SET votes = votes + 1 WHERE option = 1;' >"$WORK/pg/hot.sql"
	printf '%s\n' '\set o random(1, 4)' 'INSERT INTO ballots (poll, option) VALUES (1, :o);' >"$WORK/pg/insert.sql"
	chmod 644 "$WORK/pg/"*.sql
	for run in $(seq "$RUNS"); do pg_run postgres-hot-update "$WORK/pg/hot.sql" "$run"; done
	for run in $(seq "$RUNS"); do pg_run postgres-insert "$WORK/pg/insert.sql" "$run"; done
	stop_all
}

# ---- Redis ----
bench_redis() { # NAME EXTRA_ARGS...
	local name=$1
	shift
	mkdir -p "$WORK/redis/$name"
	redis-server --bind 127.0.0.1 --port 56379 --dir "$WORK/redis/$name" --save "" --daemonize no "$@" >"$OUT/$name.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 56379 ping >/dev/null 2>&1 && break; sleep 0.1; done
	local n=$((CLIENTS * 2000))
	for run in $(seq "$RUNS"); do
		redis-benchmark -h 127.0.0.1 -p 56379 -c "$CLIENTS" -n "$n" -t incr --csv >"$OUT/$name-$run.csv"
		# CSV columns: test, rps, avg, min, p50, p95, p99, max (ms).
		local line
		line=$(grep '^"INCR"' "$OUT/$name-$run.csv" | tr -d '"')
		record "$name" "$run" "$(echo "$line" | cut -d, -f2)" "$(echo "$line" | cut -d, -f7)"
	done
	stop_all
}

# ---- JetStream ----
bench_jetstream() {
	(cd "$REPO" && go build -o "$WORK/jsbench" ./loadtest/jsbench)
	for mode in nosync sync; do
		local flag=""
		[ "$mode" = sync ] && flag="-sync"
		for run in $(seq "$RUNS"); do
			"$WORK/jsbench" -clients "$CLIENTS" -duration "${SECONDS_PER_RUN}s" $flag >"$OUT/jetstream-$mode-$run.json"
			record "jetstream-$mode" "$run" \
				"$(python3 -c 'import json,sys; print(json.load(sys.stdin)["msgs_per_second"])' <"$OUT/jetstream-$mode-$run.json")" \
				"$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ack_p99_ms"])' <"$OUT/jetstream-$mode-$run.json")"
		done
	done
}

# ---- LiveVote ----
bench_livevote() {
	(cd "$REPO" && go build -o "$WORK/livevote" . && go build -o "$WORK/loadtest" ./loadtest)
	for mode in websocket http; do
		for run in $(seq "$RUNS"); do
			mkdir -p "$WORK/lv"
			local data
			data=$(mktemp -d "$WORK/lv/data.XXXXXX")
			"$WORK/livevote" -addr 127.0.0.1:58080 -data "$data" -sync always -vote-rate 100000 -vote-burst 100000 \
				-session-rate 100000 -session-burst 100000 >"$OUT/livevote-$mode-$run.log" 2>&1 &
			PIDS+=($!)
			for _ in $(seq 100); do curl -sf http://127.0.0.1:58080/readyz >/dev/null && break; sleep 0.1; done
			local extra=""
			[ "$mode" = http ] && extra="-http"
			"$WORK/loadtest" -url http://127.0.0.1:58080 $extra -sockets "$CLIENTS" -duration "${SECONDS_PER_RUN}s" -ramp 1s \
				-rate 0 -polls 1 -retry-share 0 -change-share 1 -json "$OUT/livevote-$mode-$run.json" >"$OUT/livevote-$mode-$run.txt" 2>/dev/null
			record "livevote-$mode" "$run" \
				"$(python3 -c 'import json,sys; print(json.load(sys.stdin)["acked_per_second"])' <"$OUT/livevote-$mode-$run.json")" \
				"$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ack_p99_ms"])' <"$OUT/livevote-$mode-$run.json")"
			stop_all
			rm -rf "$data"
		done
	done
}

summarize() {
	python3 - "$OUT/runs.tsv" "$CLIENTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, run, rate, p99 = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(rate), float(p99)))
med = {n: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v), len(v)) for n, v in rows.items()}
lv = med.get("livevote-websocket", (0, 0, 0))[0]
print(f"\n| system ({sys.argv[2]} clients, loopback) | median per s | median p99 ms | runs | LiveVote WebSocket / this |")
print("|---|---:|---:|---:|---:|")
for name, (rate, p99, n) in med.items():
    ratio = f"{lv / rate:.2f}" if rate else "-"
    print(f"| {name} | {rate:,.0f} | {p99:.2f} | {n} | {ratio} |")
PY
}

echo "peers.sh: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ), $CLIENTS clients, ${SECONDS_PER_RUN}s x $RUNS runs"
echo "peers.sh: raw results in $OUT"
: >"$OUT/runs.tsv"
install_peers
bench_postgres
bench_redis redis-nopersist --appendonly no
bench_redis redis-appendfsync-always --appendonly yes --appendfsync always
bench_jetstream
bench_livevote
summarize | tee "$OUT/summary.md"

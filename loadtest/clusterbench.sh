#!/usr/bin/env bash
# clusterbench.sh measures LiveVote's vote ingest in three set-ups on this machine, in
# one run, with the same total client count:
#   - one-hub: one hub in cluster mode on a three-server NATS cluster, streams at R3.
#   - three-hubs: three hubs in cluster mode on the same kind of NATS cluster. One
#     load tester process per hub drives a third of the clients.
#   - embedded: one hub in single-node mode with its embedded NATS server.
# Each run starts from empty data directories: the NATS servers, the hubs and the
# load testers start, vote, verify and stop, and the directories are removed. The set-ups
# take turns (one-hub, three-hubs, embedded, then again), so a drift in the machine's
# other load spreads over all three.
#
# The NATS servers use the configuration of docs/nats-cluster with other ports and
# store directories, so a running Procfile cluster is not disturbed. Every address is
# on 127.0.0.1. Every process is stopped by its pid at the end.
#
# Usage (from the repository root):
#   bash loadtest/clusterbench.sh [-sockets 1500] [-seconds 30] [-runs 2] [-rate 0]
#        [-http] [-out DIR] [-only one-hub,three-hubs,embedded] [-commit HEAD]
# -sockets is the total over all hubs and must divide by 3. -rate is the total target
# rate in votes/s (0: as fast as acks allow), also split over the hubs. The binaries are
# built from the committed tree of -commit, not from the work tree. It prints the
# figures of each run and a markdown table of medians at the end, and writes every raw
# report, hub log and CPU count under -out.
set -euo pipefail

SOCKETS=1500
SECONDS_PER_RUN=30
RUNS=2
RATE=0
HTTP_FLAG=""
OUT=""
ONLY="one-hub,three-hubs,embedded"
COMMIT=HEAD
while [ $# -gt 0 ]; do
	case "$1" in
	-sockets) SOCKETS="$2"; shift 2 ;;
	-seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
	-runs) RUNS="$2"; shift 2 ;;
	-rate) RATE="$2"; shift 2 ;;
	-http) HTTP_FLAG="-http"; shift ;;
	-out) OUT="$2"; shift 2 ;;
	-only) ONLY="$2"; shift 2 ;;
	-commit) COMMIT="$2"; shift 2 ;;
	*) echo "clusterbench.sh: unknown argument $1 (use -sockets N, -seconds N, -runs N, -rate N, -http, -out DIR, -only LIST, -commit REF)" >&2; exit 2 ;;
	esac
done
case "$SOCKETS$SECONDS_PER_RUN$RUNS$RATE" in *[!0-9]*) echo "clusterbench.sh: -sockets, -seconds, -runs and -rate take whole numbers" >&2; exit 2 ;; esac
if [ "$SOCKETS" -lt 3 ] || [ "$SOCKETS" -gt 6000 ] || [ $((SOCKETS % 3)) -ne 0 ] ||
	[ "$SECONDS_PER_RUN" -lt 5 ] || [ "$SECONDS_PER_RUN" -gt 120 ] || [ "$RUNS" -lt 1 ] || [ "$RUNS" -gt 9 ]; then
	echo "clusterbench.sh: use -sockets 3..6000 (a multiple of 3), -seconds 5..120, -runs 1..9" >&2
	exit 2
fi
for setup in ${ONLY//,/ }; do
	case "$setup" in one-hub | three-hubs | embedded) ;; *) echo "clusterbench.sh: -only lists unknown set-up $setup (use one-hub, three-hubs, embedded)" >&2; exit 2 ;; esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/livevote-clusterbench.XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$OUT"
HUB_PIDS=()      # hubs of the current run
NATS_PIDS=()     # NATS servers of the current run
LOADTEST_PIDS=() # load testers still running

# Ports on 127.0.0.1, away from the Procfile's 4222-4224, 6222-6224, 8222-8224 and 8081-8093,
# and below Linux's default ephemeral range (32768-60999), from which the load testers'
# own connections take their local ports.
NATS_CLIENT=(24222 24223 24224)
NATS_ROUTE=(26222 26223 26224)
NATS_MONITOR=(28222 28223 28224)
HUB_HTTP=(29081 29082 29083)
HUB_CLUSTER=(29091 29092 29093)
NATS_URLS="nats://127.0.0.1:${NATS_CLIENT[0]},nats://127.0.0.1:${NATS_CLIENT[1]},nats://127.0.0.1:${NATS_CLIENT[2]}"
HUB_FLAGS=(-vote-rate 100000 -vote-burst 100000 -session-rate 100000 -session-burst 100000)

# stop_pids PID... sends SIGTERM to each process and waits until all have exited,
# sending SIGKILL to any that still runs after 30 s.
stop_pids() {
	for pid in "$@"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			echo "clusterbench.sh: pid $pid did not stop within 30 s of SIGTERM; sending SIGKILL" >&2
			kill -9 "$pid" 2>/dev/null || true
		fi
	done
}

# stop_all stops the load testers, then the hubs, then the NATS servers, so that a
# hub can store its stop snapshots before NATS goes.
stop_all() {
	# A load tester runs under /usr/bin/time, which does not pass SIGTERM on.
	for pid in "${LOADTEST_PIDS[@]}"; do
		for child in $(pgrep -P "$pid" || true); do kill "$child" 2>/dev/null || true; done
		kill "$pid" 2>/dev/null || true
	done
	LOADTEST_PIDS=()
	stop_pids "${HUB_PIDS[@]}"
	HUB_PIDS=()
	stop_pids "${NATS_PIDS[@]}"
	NATS_PIDS=()
}
trap 'stop_all; rm -rf "$WORK/run" "$WORK/src" "$WORK/livevote" "$WORK/loadtest" "$WORK/nats-server"; rmdir "$WORK" 2>/dev/null || true' EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
	for p in "${NATS_CLIENT[@]}" "${NATS_ROUTE[@]}" "${NATS_MONITOR[@]}" "${HUB_HTTP[@]}" "${HUB_CLUSTER[@]}"; do
		if ! port_free "$p"; then
			echo "clusterbench.sh: port 127.0.0.1:$p is in use; stop what listens there first" >&2
			exit 1
		fi
	done
}

# wait_for WHAT SECONDS COMMAND... runs COMMAND every 0.2 s until it succeeds.
wait_for() {
	local what=$1 limit=$2
	shift 2
	for _ in $(seq $((limit * 5))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "clusterbench.sh: timed out after ${limit}s waiting until $what" >&2
	return 1
}

# nats_ready succeeds when all three servers pass /healthz and name one meta leader.
nats_ready() {
	local leaders=""
	for i in 0 1 2; do
		curl -sf "http://127.0.0.1:${NATS_MONITOR[$i]}/healthz" >/dev/null || return 1
		leaders+=$(curl -sf "http://127.0.0.1:${NATS_MONITOR[$i]}/jsz" |
			python3 -c 'import json,sys; m=json.load(sys.stdin).get("meta_cluster") or {}; print(m.get("leader",""))')" "
	done
	python3 -c 'import sys; l=sys.argv[1].split(); sys.exit(0 if len(l)==3 and len(set(l))==1 else 1)' "$leaders"
}

start_nats() {
	for i in 0 1 2; do
		local n=$((i + 1)) conf="$WORK/run/nats-$((i + 1)).conf"
		mkdir -p "$WORK/run/nats-$n"
		sed -e "s|127.0.0.1:4222|127.0.0.1:${NATS_CLIENT[0]}|; s|127.0.0.1:4223|127.0.0.1:${NATS_CLIENT[1]}|; s|127.0.0.1:4224|127.0.0.1:${NATS_CLIENT[2]}|" \
			-e "s|127.0.0.1:6222|127.0.0.1:${NATS_ROUTE[0]}|; s|127.0.0.1:6223|127.0.0.1:${NATS_ROUTE[1]}|; s|127.0.0.1:6224|127.0.0.1:${NATS_ROUTE[2]}|" \
			-e "s|127.0.0.1:8222|127.0.0.1:${NATS_MONITOR[0]}|; s|127.0.0.1:8223|127.0.0.1:${NATS_MONITOR[1]}|; s|127.0.0.1:8224|127.0.0.1:${NATS_MONITOR[2]}|" \
			-e "s|store_dir: .*|store_dir: \"$WORK/run/nats-$n\"|" \
			"$REPO/docs/nats-cluster/nats-$n.conf" >"$conf"
		grep -q "listen: 127.0.0.1:${NATS_CLIENT[$i]}" "$conf" || { echo "clusterbench.sh: $conf did not get port ${NATS_CLIENT[$i]}" >&2; exit 1; }
		"$WORK/nats-server" -c "$conf" >"$LOGS/nats-$n.log" 2>&1 &
		NATS_PIDS+=($!)
		SERVER_PIDS+=("nats-$n:$!")
	done
	wait_for "the NATS cluster is ready" 60 nats_ready
}

# hub_members N I succeeds when hub I reports N cluster members.
hub_members() {
	curl -sf "http://127.0.0.1:${HUB_HTTP[$2]}/metrics" | grep -qx "livevote_cluster_members $1"
}

# start_hub I MODE starts hub I in cluster or embedded mode.
start_hub() {
	local i=$1 n=$(($1 + 1)) mode=$2
	local args=(-addr "127.0.0.1:${HUB_HTTP[$i]}" -data "$WORK/run/hub-$n" "${HUB_FLAGS[@]}")
	if [ "$mode" = cluster ]; then
		args+=(-cluster-name clusterbench -cluster-addr "127.0.0.1:${HUB_CLUSTER[$i]}" -nats-url "$NATS_URLS" -nats-replicas 3)
	fi
	"$WORK/livevote" "${args[@]}" >"$LOGS/hub-$n.log" 2>&1 &
	HUB_PIDS+=($!)
	SERVER_PIDS+=("hub-$n:$!")
}

# cpu_seconds PID prints the user plus system CPU time of PID in seconds.
cpu_seconds() {
	awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# machine_busy prints busy and total jiffies of all CPUs.
machine_busy() {
	awk '/^cpu /{total=0; for (i=2; i<=NF; i++) total+=$i; print total-$5-$6, total}' /proc/stat
}

# run_setup SETUP RUN runs one measurement.
run_setup() {
	local setup=$1 run=$2 hubs=1 mode=cluster
	[ "$setup" = three-hubs ] && hubs=3
	[ "$setup" = embedded ] && mode=embedded
	LOGS="$OUT/$setup-$run"
	mkdir -p "$LOGS" "$WORK/run"
	SERVER_PIDS=()
	check_ports

	if [ "$mode" = cluster ]; then start_nats; fi
	# The hubs start one at a time. Three hubs started at once on a fresh NATS cluster
	# timed out creating the vote stream on this 2-core machine, and not all came up.
	for i in $(seq 0 $((hubs - 1))); do
		start_hub "$i" "$mode"
		wait_for "hub $((i + 1)) is ready" 60 curl -sf "http://127.0.0.1:${HUB_HTTP[$i]}/readyz"
	done
	if [ "$mode" = cluster ]; then
		for i in $(seq 0 $((hubs - 1))); do wait_for "hub $((i + 1)) sees $hubs members" 60 hub_members "$hubs" "$i"; done
	fi

	local per=$((SOCKETS / hubs)) rate=$((RATE / hubs))
	local before=() busy0 total0
	for entry in "${SERVER_PIDS[@]}"; do before+=("$(cpu_seconds "${entry#*:}")"); done
	read -r busy0 total0 < <(machine_busy)
	cat /proc/loadavg >"$LOGS/loadavg-before.txt"

	for i in $(seq 0 $((hubs - 1))); do
		/usr/bin/time -f '%U %S' -o "$LOGS/loadtest-$((i + 1)).time" "$WORK/loadtest" -url "http://127.0.0.1:${HUB_HTTP[$i]}" $HTTP_FLAG -sockets "$per" -duration "${SECONDS_PER_RUN}s" \
			-ramp 3s -rate "$rate" -seed $((run * 10 + i + 1)) -json "$LOGS/loadtest-$((i + 1)).json" \
			>"$LOGS/loadtest-$((i + 1)).txt" 2>"$LOGS/loadtest-$((i + 1)).err" &
		LOADTEST_PIDS+=($!)
	done
	local failed=0
	for pid in "${LOADTEST_PIDS[@]}"; do wait "$pid" || failed=1; done
	LOADTEST_PIDS=()

	local busy1 total1
	read -r busy1 total1 < <(machine_busy)
	local hz
	hz=$(getconf CLK_TCK)
	{
		# Jiffies of all CPUs: busy is everything but idle and iowait.
		echo "machine_busy_seconds $(python3 -c "print(round(($busy1-$busy0)/$hz, 2))")"
		echo "machine_total_seconds $(python3 -c "print(round(($total1-$total0)/$hz, 2))")"
		local k=0
		for entry in "${SERVER_PIDS[@]}"; do
			echo "cpu_seconds ${entry%%:*} $(python3 -c "print(round($(cpu_seconds "${entry#*:}")-${before[$k]}, 2))")"
			k=$((k + 1))
		done
		for i in $(seq 1 "$hubs"); do
			echo "cpu_seconds loadtest-$i $(awk '{print $1 + $2}' "$LOGS/loadtest-$i.time")"
		done
	} >"$LOGS/cpu.txt"
	for i in $(seq 0 $((hubs - 1))); do
		curl -sf "http://127.0.0.1:${HUB_HTTP[$i]}/metrics" >"$LOGS/metrics-$((i + 1)).txt" || true
	done
	cat /proc/loadavg >"$LOGS/loadavg-after.txt"

	stop_all
	grep -c -E 'level=(WARN|ERROR)' "$LOGS"/hub-*.log >"$LOGS/hub-warnings.txt" || true
	rm -rf "$WORK/run"
	[ "$failed" = 0 ] || echo "clusterbench.sh: a load tester of $setup run $run exited non-zero; see $LOGS" >&2
	summarize_run "$setup" "$run"
}

summarize_run() {
	python3 - "$OUT" "$1" "$2" <<'PY'
import glob, json, os, sys
out, setup, run = sys.argv[1:]
d = os.path.join(out, f"{setup}-{run}")
reps = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "loadtest-*.json")))]
cpu = {}
for line in open(os.path.join(d, "cpu.txt")):
    f = line.split()
    cpu[f[-2] if f[0] == "cpu_seconds" else f[0]] = float(f[-1])
mine = sum(v for k, v in cpu.items() if not k.startswith("machine_"))
other = cpu["machine_busy_seconds"] - mine

# Mean votes per append and mean append time over all hubs, from their /metrics.
sums = {}
for f in glob.glob(os.path.join(d, "metrics-*.txt")):
    for line in open(f):
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{")[0]
        sums[base] = sums.get(base, 0.0) + float(value)
def mean(m):
    c = sums.get(m + "_count", 0)
    return sums.get(m + "_sum", 0) / c if c else 0.0
batch, append_ms = mean("livevote_shard_batch_size"), 1000 * mean("livevote_append_seconds")
tsv = open(os.path.join(out, "runs.tsv"), "a")
total = 0.0
for i, r in enumerate(reps, 1):
    errors = sum(r["errors"].values())
    total += r["acked_per_second"]
    line = [setup, run, f"hub-{i}", r["mode"], r["sockets"], r["acked"], round(r["acked_per_second"]), r["peak_acked_per_second"],
            r["ack_p50_ms"], r["ack_p99_ms"], r["ack_max_ms"], r["lost"], r["double_counted"], r["unconfirmed"], errors]
    tsv.write("\t".join(map(str, line)) + "\n")
    print(f"{setup} run {run} hub-{i}: {r['acked']} acked, {r['acked_per_second']:.0f}/s, p50 {r['ack_p50_ms']:.1f} ms, "
          f"p99 {r['ack_p99_ms']:.1f} ms, lost {r['lost']}, double {r['double_counted']}, unconfirmed {r['unconfirmed']}, errors {r['errors']}")
if len(reps) > 1:
    print(f"{setup} run {run} total: {total:.0f}/s")
print(f"  appends {sums.get('livevote_append_seconds_count', 0):.0f}, mean votes per append {batch:.1f}, mean append {append_ms:.1f} ms, "
      f"append failures {sums.get('livevote_append_failures_total', 0):.0f}")
print("  CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items() if not k.startswith("machine_")) +
      f"; all CPUs busy {cpu['machine_busy_seconds']:.1f} of {cpu['machine_total_seconds']:.1f}, other processes {other:.1f}")
open(os.path.join(out, "cpu.tsv"), "a").write("\t".join([setup, run] + [f"{k}={v}" for k, v in cpu.items()] +
    [f"other={other:.2f}", f"appends={sums.get('livevote_append_seconds_count', 0):.0f}", f"batch={batch:.2f}", f"append_ms={append_ms:.2f}"]) + "\n")
PY
}

# Build from the committed tree of -commit, so that uncommitted edits in the work tree
# do not change the binaries between runs.
COMMIT_ID=$(git -C "$REPO" rev-parse --verify "$COMMIT^{commit}")
mkdir -p "$WORK/src"
git -C "$REPO" archive "$COMMIT_ID" | tar -x -C "$WORK/src"
# summarize_all prints, per set-up, the median over the runs of the total acks/s and of
# each load tester's p50 and p99, and the ratios three-hubs/one-hub and one-hub/embedded.
summarize_all() {
	python3 - "$OUT/runs.tsv" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    runs[f[0]][f[1]].append((float(f[6]), float(f[8]), float(f[9]), int(f[11]), int(f[12]), int(f[13])))
print("\n| set-up | runs | total acks/s, median (min-max) | ack p50 ms, median | ack p99 ms, median | lost | double counted | unconfirmed |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
med = {}
for setup, by_run in runs.items():
    totals = [sum(h[0] for h in hubs) for hubs in by_run.values()]
    hubs = [h for hs in by_run.values() for h in hs]
    med[setup] = statistics.median(totals)
    print(f"| {setup} | {len(totals)} | {med[setup]:,.0f} ({min(totals):,.0f}-{max(totals):,.0f}) | "
          f"{statistics.median(h[1] for h in hubs):.1f} | {statistics.median(h[2] for h in hubs):.1f} | "
          f"{sum(h[3] for h in hubs)} | {sum(h[4] for h in hubs)} | {sum(h[5] for h in hubs)} |")
if med.get("one-hub"):
    if "three-hubs" in med:
        print(f"\nthree-hubs / one-hub: {med['three-hubs'] / med['one-hub']:.2f}")
    if med.get("embedded"):
        print(f"one-hub / embedded: {med['one-hub'] / med['embedded']:.2f}")
PY
}

echo "clusterbench.sh: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)," \
	"commit ${COMMIT_ID:0:12}, $SOCKETS clients, ${SECONDS_PER_RUN}s x $RUNS runs, rate $RATE, ${HTTP_FLAG:-websocket}"
echo "clusterbench.sh: raw results in $OUT"
(cd "$WORK/src" && go build -o "$WORK/livevote" . && go build -o "$WORK/loadtest" ./loadtest &&
	go build -o "$WORK/nats-server" github.com/nats-io/nats-server/v2)
rm -rf "$WORK/src"
: >"$OUT/runs.tsv"
: >"$OUT/cpu.tsv"
for run in $(seq "$RUNS"); do
	for setup in ${ONLY//,/ }; do
		run_setup "$setup" "$run"
	done
done
summarize_all | tee "$OUT/summary.md"

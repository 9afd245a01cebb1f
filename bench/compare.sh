#!/usr/bin/env bash
# Runs the same workloads against a 3-member synod cluster and then a
# 3-member etcd cluster on loopback (data in one directory on one disk,
# fsync on for both, default settings otherwise), stops everything it
# started, and prints each figure of synod beside etcd's with the ratio.
#
#   bash bench/compare.sh                 # about 5 minutes
#   DURATION=5 bash bench/compare.sh      # seconds per workload
#   PUTS=50000 bash bench/compare.sh      # puts per put run at 64 and 256 clients
#   ONLY=synod bash bench/compare.sh      # one system only (no ratios)
#
# The put runs are a fixed number of puts (PUTS; a tenth of it with one
# client) without warm-up, the same for both systems, so that both hold
# the same data when their memory is read after each run; throughput is
# that count over the time it took. The other workloads run for DURATION
# seconds each.
#
# Results: target/bench-compare/results.jsonl (JSON lines), table.md, the
# members' logs and each run's timeline (SYSTEM-N.timeline: every operation's
# client, start in ms since the UNIX epoch and latency, to set a slow stretch
# beside the logs). etcd is Debian's etcd-server, installed if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/bench-compare}
DURATION=${DURATION:-10}
PUTS=${PUTS:-100000}
WARMUP=${WARMUP:-1}
ONLY=${ONLY:-}
SYNOD=$ROOT/target/release/synod
RESULTS=$OUT/results.jsonl
PIDS=()

log() { printf '\n== %s\n' "$*" >&2; }

stop_members() {
    if ((${#PIDS[@]})); then
        kill "${PIDS[@]}" 2>/dev/null || true
        for pid in "${PIDS[@]}"; do
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        done
    fi
    PIDS=()
}
trap stop_members EXIT INT TERM

log "building synod (release)"
(cd "$ROOT" && cargo build --release -p synod)

if [[ -z "$ONLY" || "$ONLY" == etcd ]] && ! command -v etcd >/dev/null; then
    log "installing etcd (Debian's etcd-server)"
    SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi

rm -rf "$OUT"
mkdir -p "$OUT"

CLUSTER="m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
ENDPOINTS="http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379"

# start SYSTEM: starts its three members with etcd's flags (both take them)
# and waits until every one answers /health.
start() {
    local system=$1 program
    case $system in
        synod) program=("$SYNOD" node) ;;
        etcd) program=(etcd) ;;
    esac
    for i in 1 2 3; do
        "${program[@]}" --name "m$i" --data-dir "$OUT/$system/m$i" \
            --listen-client-urls "http://127.0.0.1:${i}2379" \
            --advertise-client-urls "http://127.0.0.1:${i}2379" \
            --listen-peer-urls "http://127.0.0.1:${i}2380" \
            --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
            --initial-cluster "$CLUSTER" --initial-cluster-token bench \
            --initial-cluster-state new >"$OUT/$system-m$i.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 300); do
        local healthy=0
        for i in 1 2 3; do
            if curl -sf "http://127.0.0.1:${i}2379/health" | grep -q '"health":"true"'; then
                healthy=$((healthy + 1))
            fi
        done
        if ((healthy == 3)); then return 0; fi
        sleep 0.1
    done
    echo "$system did not become healthy within 30 s; logs in $OUT" >&2
    exit 1
}

# bench SYSTEM ARGS...: one measured run against the cluster's leader.
RUN=0
bench() {
    local system=$1
    shift
    RUN=$((RUN + 1))
    "$SYNOD" bench --label "$system" --endpoints "$ENDPOINTS" --target leader \
        --duration "$DURATION" --warmup "$WARMUP" --val-size 256 --key-space 10000 \
        --json "$RESULTS" --rss-pids "$(IFS=,; echo "${PIDS[*]}")" \
        --timeline "$OUT/$system-$RUN.timeline" "$@"
}

log "floor: append+fdatasync on this disk, loopback gRPC round trip"
"$SYNOD" bench floor --dir "$OUT" --json "$RESULTS"

for system in synod etcd; do
    if [[ -n "$ONLY" && "$ONLY" != "$system" ]]; then continue; fi
    log "$system: starting 3 members"
    start "$system"
    RUN=0
    # No warm-up (its puts would not be counted): the same data in both.
    # Memory is read right after each put run and again 3 s later, when
    # what the run set going (a snapshot's save, a collection) is done.
    WARMUP=0 bench "$system" --workload put --clients 1 --total $((PUTS / 10)) --rss-settle-ms 3000
    WARMUP=0 bench "$system" --workload put --clients 64 --total "$PUTS" --rss-settle-ms 3000
    WARMUP=0 bench "$system" --workload put --clients 256 --conns 64 --total "$PUTS" --rss-settle-ms 3000
    bench "$system" --workload get --consistency l --clients 64 --prefill
    bench "$system" --workload get --consistency s --clients 64
    bench "$system" --workload mixed --consistency l --clients 64
    bench "$system" --workload txn --clients 64
    bench "$system" --workload watch --clients 1 --watchers 100 --conns 10
    bench "$system" --workload put --clients 64 --target all --name "put via all members c=64"
    log "$system: stopping"
    stop_members
done

if [[ -z "$ONLY" ]]; then
    log "synod / etcd"
    "$SYNOD" bench compare "$RESULTS" --markdown >"$OUT/table.md"
    "$SYNOD" bench compare "$RESULTS"
fi

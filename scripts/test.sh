#!/usr/bin/env bash
# The one test command: formatting, lints, every test, and the simulator over
# many seeds with every fault on. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS3=${SYNOD_SIM_SEEDS:-1..1001}
SEEDS5=${SYNOD_SIM_SEEDS5:-1..301}

step() { printf '\n==> %s\n' "$*"; }

# What the tests need beyond cargo: Debian's etcdctl (the integration tests
# drive a real cluster with it), protoc (the etcd-client crate, used by the
# Rust client tests, compiles its protos at build time) and libfaketime (the
# torture test steps members' wall clocks with it). synod itself needs none.
need=()
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v faketime >/dev/null || need+=(faketime)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "cargo build --release"
cargo build --release -p synod

step "simulator: 3 replicas, seeds $SEEDS3, every fault"
./target/release/synod sim --seeds "$SEEDS3" --nemesis all --nodes 3

step "simulator: 5 replicas, seeds $SEEDS5, every fault"
./target/release/synod sim --seeds "$SEEDS5" --nemesis all --nodes 5

step "simulator: 4 replicas, seeds $SEEDS5, every fault"
./target/release/synod sim --seeds "$SEEDS5" --nemesis all --nodes 4

step "simulator: 3 replicas, seeds $SEEDS5, every fault, commands batched per turn as the server does"
./target/release/synod sim --seeds "$SEEDS5" --nemesis all --nodes 3 --clients 10 --think-ms 2 --batch-ms 2

step "all green"

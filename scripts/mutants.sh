#!/usr/bin/env bash
# One-line slips in the Paxos core and its log, each run through the
# simulator (and then the core's and the log's own tests): how many does
# each catch? Not part of the test command (each
# mutant is a release build of the simulator, under a minute on 2 cores).
#
#   bash scripts/mutants.sh              # every mutant, 1000 + 200 seeds each
#   SEEDS=1:201 bash scripts/mutants.sh  # fewer seeds (FIRST:END)
#   ONLY=M05 bash scripts/mutants.sh     # one mutant
#
# Each mutant is applied to a scratch copy of HEAD (a git worktree under
# target/), so the working tree is never touched. Results: one line per
# mutant on stdout and in target/mutants/results.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/mutants
WT=$OUT/tree
SEEDS=${SEEDS:-1:1001}
SEEDS5=${SEEDS5:-1:201}
ONLY=${ONLY:-}
mkdir -p "$OUT"
rm -rf "$WT"
git -C "$ROOT" worktree prune
git -C "$ROOT" worktree add --detach -q "$WT" HEAD
trap 'git -C "$ROOT" worktree remove --force "$WT" 2>/dev/null || true' EXIT
export CARGO_TARGET_DIR=$OUT/target

# name ~ file ~ the line as written ~ the slip (\n: a line break)
MUTANTS=$(cat <<'EOF'
M01~crates/paxos/src/multi/replica.rs~            self.persist(Record::Promise(ballot));\n        }\n        self.observe(ballot);~        }\n        self.observe(ballot);
M02~crates/paxos/src/multi/replica.rs~        self.max_seen = ballot;\n        self.persist(Record::Promise(ballot));~        self.max_seen = ballot;
M03~crates/paxos/src/multi/durable.rs~                if *ballot > self.promised {\n                    self.promised = *ballot;\n                }\n                if *slot > self.snapshot_slot {\n                    self.accepted~                if *slot > self.snapshot_slot {\n                    self.accepted
M04~crates/storage/src/replica.rs~        self.append(&PaxosRecord::Promise(self.mirror.promised))?;~
M05~crates/storage/src/replica.rs~        self.append(&PaxosRecord::Promise(keep.promised))?;~
M06~crates/paxos/src/multi/replica.rs~        if leader.ballot != ballot {\n            return;\n        }\n        let Some(proposal) = leader.inflight.get_mut(&slot)~        let Some(proposal) = leader.inflight.get_mut(&slot)
M07~crates/paxos/src/multi/replica.rs~    fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value) {\n        if ballot < self.promised {~    fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value) {\n        if ballot < self.promised && slot == 0 {
M08~crates/paxos/src/multi/replica.rs~            return;\n        }\n        if ballot < self.promised {\n            self.nack(from, ballot);\n            return;\n        }\n        if ballot > self.promised {\n            self.promised = ballot;\n            self.persist(Record::Promise(ballot));~            return;\n        }\n        if ballot < self.promised && first_slot == 0 {\n            self.nack(from, ballot);\n            return;\n        }\n        if ballot > self.promised {\n            self.promised = ballot;\n            self.persist(Record::Promise(ballot));
M09~crates/paxos/src/multi/replica.rs~.is_none_or(|(b, _)| entry.ballot > *b);~.is_none_or(|(b, _)| entry.ballot < *b);
M10~crates/paxos/src/multi/replica.rs~        let recovered_upto = last_reported.max(last_known).max(candidate.first_slot - 1);~        let recovered_upto = last_known.max(candidate.first_slot - 1);
M11~crates/paxos/src/multi/replica.rs~        if candidate.promises.len() >= self.config.quorum() {~        if candidate.promises.len() + 1 >= self.config.quorum() {
M12~crates/paxos/src/multi/replica.rs~        if proposal.votes.len() < quorum {~        if proposal.votes.len() + 1 < quorum {
M13~crates/paxos/src/multi/replica.rs~            Some((accepted, value)) if *accepted == ballot => value.clone(),~            Some((_, value)) => value.clone(),
M14~crates/paxos/src/multi/replica.rs~        if !duplicate {\n            assert!(~        if duplicate {\n            assert!(
M15~crates/paxos/src/multi/replica.rs~        let ballot = Ballot::next_above(self.max_seen.max(self.promised), self.config.id);~        let ballot = Ballot::next_above(self.max_seen, self.config.id);
M16~crates/paxos/src/multi/replica.rs~            let go = read.round <= confirmed && read.read_index <= applied;~            let go = read.read_index <= applied;
M17~crates/paxos/src/multi/replica.rs~        let from_slot = first_slot.max(self.snapshot_slot + 1);~        let from_slot = first_slot.max(self.snapshot_slot + 1) + 1;
M18~crates/paxos/src/multi/replica.rs~    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, commit_index: Slot, round: u64) {\n        if ballot < self.promised {~    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, commit_index: Slot, round: u64) {\n        if ballot < self.promised && round == u64::MAX {
EOF
)

: >"$OUT/results.txt"
while IFS='~' read -r name file from to; do
    [[ -z "$name" ]] && continue
    [[ -n "$ONLY" && "$ONLY" != "$name" ]] && continue
    git -C "$WT" checkout -q -- .
    python3 - "$WT/$file" "$from" "$to" <<'PY'
import sys
path = sys.argv[1]
old, new = (a.replace("\\n", "\n") for a in sys.argv[2:4])
text = open(path).read()
count = text.count(old)
if count != 1:
    sys.exit(f"{path}: the line to mutate occurs {count} times")
open(path, "w").write(text.replace(old, new))
PY
    if ! (cd "$WT" && cargo build --release -q -p sim --example sweep 2>"$OUT/$name.build.log"); then
        line="$name: does not build (see $OUT/$name.build.log)"
    else
        sweep=$CARGO_TARGET_DIR/release/examples/sweep
        three=$("$sweep" 3 "${SEEDS%:*}" "${SEEDS#*:}")
        five=$("$sweep" 5 "${SEEDS5%:*}" "${SEEDS5#*:}")
        caught3=$(head -1 <<<"$three" | cut -d' ' -f1)
        caught5=$(head -1 <<<"$five" | cut -d' ' -f1)
        first=$(sed -n 2p <<<"$three")
        [[ -n "$first" ]] || first=$(sed -n 2p <<<"$five")
        first=${first:0:220}
        if (cd "$WT" && cargo test -q -p paxos -p storage >"$OUT/$name.tests.log" 2>&1); then
            tests="the core's and the log's tests pass"
        else
            tests="the core's and the log's tests fail (see $OUT/$name.tests.log)"
        fi
        line="$name: caught in $caught3 of 3-member runs (seeds $SEEDS), $caught5 of 5-member runs (seeds $SEEDS5); ${first:-never}; $tests"
    fi
    echo "$line" | tee -a "$OUT/results.txt"
done <<<"$MUTANTS"
git -C "$WT" checkout -q -- .

#!/usr/bin/env bash
# The soak under faults: builds every binary in release and runs `mcp-soak`, which drives CALLS
# (default 100,000) calls at 64 in flight through `mcp-orchestrator serve` (stdio) in front of the
# three bundled servers, Cosmos failing 20% of its calls and REST killed (SIGKILL) 3 s after each
# (re)start. It prints the figures and one PASS/FAIL line per invariant, and exits non-zero when
# one fails:
#   - every request gets exactly one response (ids matched; none lost, unknown or duplicated),
#     and every success answers its own request;
#   - calls that depend only on healthy servers (SQL pass-through, composites whose critical
#     steps are on SQL) all succeed;
#   - the orchestrator's RSS at the end is within 10% of its RSS after warm-up (10% of the calls);
#   - its open file descriptors do not grow; exactly the three servers run as its children at the
#     end, killed ones are reaped, none is orphaned, and it exits cleanly when its stdin closes.
# It also reports goodput per server role (succeeded against could-have shares) and each breaker's
# transitions; --min-goodput-flaky PCT and --max-goodput-gap-killed POINTS make invariants of them.
# --cosmos-down-secs N takes Cosmos fully down for N s mid-run (served over HTTP by the soak,
# killed, started again) and reports the calls and the breaker around the outage.
#
# Usage: scripts/soak.sh [CALLS] [more mcp-soak flags, e.g. --json --kill-every-secs 5]
#        scripts/soak.sh 50000 --cosmos-down-secs 10
# Environment: SOAK_NO_BUILD=1 skips the build (uses target/release as it is). Linux only.
# The short CI version is tests/soak.rs (debug binaries, 5,000 calls).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLS="${1:-100000}"
shift || true

cd "$ROOT"
if [[ -z "${SOAK_NO_BUILD:-}" ]]; then
  # Every workspace binary: the orchestrator, the three servers and mcp-soak itself.
  cargo build --release --workspace --bins
fi
exec "$ROOT/target/release/mcp-soak" --calls "$CALLS" "$@"

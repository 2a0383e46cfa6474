#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios that apply to any server against the
# orchestrator's streamable-HTTP front, and prints one PASS/FAIL line per scenario and a closing
# `conformance: N passed, M failed` line; exits non-zero if any scenario fails.
#
# Needs: bash, npm (Node 20 is enough to install), cargo. The suite needs Node 22, which it gets
# from the npm package `node` (the Node binary ships as a registry package), installed with the
# suite into .tools/conformance/ (git-ignored; reused while the pinned versions match).
#
# Environment:
#   CONFORMANCE_TOOLS_DIR   where to install the npm packages (default: <repo>/.tools/conformance)
#   CONFORMANCE_BUILD=1     run `cargo build --workspace --bins` even when the binaries exist
#   CONFORMANCE_KEEP=1      keep the temporary folder (config, logs, checks.json files)
#   CONFORMANCE_TIMEOUT     seconds one scenario may take (default: 120)
set -euo pipefail

# Pinned; looked up with `npm view @modelcontextprotocol/conformance` (Node 22's in scripts/lib.sh).
CONFORMANCE_VERSION=0.1.16

# The server scenarios that apply to any server (the others need tools/resources/prompts of the
# suite's own reference server).
SCENARIOS=(
  server-initialize
  ping
  tools-list
  server-sse-multiple-streams
  dns-rebinding-protection
  logging-set-level
  resources-list
  prompts-list
)

LOG_PREFIX=conformance
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
TOOLS_DIR="${CONFORMANCE_TOOLS_DIR:-$ROOT/.tools/conformance}"
SCENARIO_TIMEOUT="${CONFORMANCE_TIMEOUT:-120}"
NODE="$TOOLS_DIR/node_modules/node/bin/node"
CLI="$TOOLS_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
ORCHESTRATOR="$ROOT/target/debug/mcp-orchestrator"

require_tools npm cargo timeout

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"
ORCH_PID=""

cleanup() {
  local status=$?
  stop_gracefully "$ORCH_PID"
  if [[ "${CONFORMANCE_KEEP:-0}" == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Node 22 and the conformance suite ----------------------------------------------------------
node22_with "$TOOLS_DIR" @modelcontextprotocol/conformance "$CONFORMANCE_VERSION"
[[ -f "$CLI" ]] || die "$CLI is missing from the installed suite"
log "using node $("$NODE" --version), @modelcontextprotocol/conformance $CONFORMANCE_VERSION"

# --- 2. A config: the repo's mcp.json with absolute commands and in-memory databases ------------
CONFIG="$WORK/mcp.json"
throwaway_config "$NODE" "$CONFIG" :memory: >"$WORK/commands.txt"
UPSTREAMS="$(wc -l <"$WORK/commands.txt")"

# --- 3. The binaries --------------------------------------------------------------------------------
ensure_binaries "$WORK/commands.txt" "${CONFORMANCE_BUILD:-0}"

# --- 4. The orchestrator on a free loopback port -------------------------------------------------
ORCH_LOG="$WORK/orchestrator.log"
env -u MCP_AUTH_TOKEN -u MCP_ORCHESTRATOR_CONFIG RUST_LOG=info MCP_LOG_FORMAT=text \
  "$ORCHESTRATOR" serve --config "$CONFIG" --http 127.0.0.1:0 >"$ORCH_LOG" 2>&1 &
ORCH_PID=$!

URL="$(wait_for_url "$ORCH_LOG" "$ORCH_PID")" || {
  cat "$ORCH_LOG" >&2
  die "the orchestrator did not listen within 30 s"
}
log "orchestrator (pid $ORCH_PID) listening on $URL"
# A scenario does not need the upstreams, but the lists should be the real catalog.
wait_for_upstreams "$ORCH_LOG" "$UPSTREAMS"

# --- 5. The scenarios ------------------------------------------------------------------------------
# Sums a checks.json: "<checks> <failures> <warnings>".
count_checks() {
  # shellcheck disable=SC2016 # JavaScript, not shell.
  "$NODE" -e '
    const checks = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const n = (s) => checks.filter((c) => c.status === s).length;
    console.log(`${checks.length} ${n("FAILURE")} ${n("WARNING")}`);
  ' "$1"
}

passed=0
failed=0
failed_names=()
for scenario in "${SCENARIOS[@]}"; do
  out="$WORK/results/$scenario"
  mkdir -p "$out"
  rc=0
  timeout "$SCENARIO_TIMEOUT" "$NODE" "$CLI" server --url "$URL" --scenario "$scenario" \
    --output-dir "$out" >"$out/output.txt" 2>&1 || rc=$?
  checks_file="$(find "$out" -name checks.json -print -quit)"
  summary="no checks.json"
  ok=0
  if [[ -n "$checks_file" ]] && read -r total failures warnings < <(count_checks "$checks_file"); then
    summary="$total checks, $failures failed, $warnings warnings"
    [[ "$rc" == 0 && "$total" -gt 0 && "$failures" == 0 ]] && ok=1
  fi
  [[ "$rc" == 124 ]] && summary="timed out after ${SCENARIO_TIMEOUT}s; $summary"
  if [[ "$ok" == 1 ]]; then
    printf 'PASS  %-30s (%s)\n' "$scenario" "$summary"
    passed=$((passed + 1))
  else
    printf 'FAIL  %-30s (exit %s; %s)\n' "$scenario" "$rc" "$summary"
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/      | /' "$out/output.txt" | grep -v 'unknown format' | tail -n 40
    failed=$((failed + 1))
    failed_names+=("$scenario")
  fi
done

if ((failed > 0)); then
  log "failed: ${failed_names[*]}; orchestrator log tail:"
  tail -n 40 "$ORCH_LOG" | sed 's/^/      | /' >&2
fi
echo "conformance: $passed passed, $failed failed"
((failed == 0))

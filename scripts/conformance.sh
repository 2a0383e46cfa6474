#!/usr/bin/env bash
# Runs the official MCP conformance suite against both sides of the orchestrator:
#   server  its streamable-HTTP front, in the server scenarios that apply to any server;
#   client  its upstream side, in the client scenarios: the suite starts a test server per
#           scenario, and `mcp-conformance-agent` (crates/testkit) starts `mcp-orchestrator serve`
#           with that server as its only HTTP upstream and, as the agent, does what the scenario
#           asks through it (list and call tools, answer an elicitation).
# Prints one PASS/FAIL line per scenario and a closing `conformance: N passed, M failed` line;
# exits non-zero if any scenario fails (a warning counts: the suite itself fails on one).
#
# Usage: scripts/conformance.sh [server|client]   (default: both)
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
SERVER_SCENARIOS=(
  server-initialize
  ping
  tools-list
  server-sse-multiple-streams
  dns-rebinding-protection
  logging-set-level
  resources-list
  prompts-list
)

# Every client scenario of the suite (`conformance list --client`), each either run or left out
# with the reason.
#   initialize, tools_call, sse-retry: run.
#   elicitation-sep1034-client-defaults: run: the upstream's `elicitation/create` goes through the
#     orchestrator to the agent whose call caused it, which declares form elicitation and accepts
#     with each field's default; the suite checks the defaults arrived and the answer came back.
#   auth/* (metadata-default, metadata-var1..3, basic-cimd, scope-from-www-authenticate,
#     scope-from-scopes-supported, scope-omitted-when-undefined, scope-step-up, scope-retry-limit,
#     token-endpoint-auth-basic/-post/-none, pre-registration, 2025-03-26-oauth-metadata-backcompat,
#     2025-03-26-oauth-endpoint-fallback; draft: resource-mismatch, offline-access-scope,
#     offline-access-not-supported; extensions: client-credentials-jwt, client-credentials-basic,
#     cross-app-access-complete-flow): left out: the orchestrator authenticates to an HTTP
#     upstream only with the headers its config gives (`Authorization: Bearer ${env:..}`); it has
#     no OAuth client (no metadata discovery, client registration or token flows), so these test
#     a feature it does not have rather than how it carries one.
CLIENT_SCENARIOS=(
  initialize
  tools_call
  sse-retry
  elicitation-sep1034-client-defaults
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
AGENT="$ROOT/target/debug/mcp-conformance-agent"

case "${1:-both}" in
  server) SIDES=(server) ;;
  client) SIDES=(client) ;;
  both) SIDES=(server client) ;;
  *) die "usage: $0 [server|client]" ;;
esac
runs() { [[ " ${SIDES[*]} " == *" $1 "* ]]; }

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
# The agent is a workspace binary too: a missing one triggers the same build.
echo "$AGENT" >>"$WORK/commands.txt"
ensure_binaries "$WORK/commands.txt" "${CONFORMANCE_BUILD:-0}"
# The suite splits its --command at spaces.
[[ "$AGENT" != *[[:space:]]* ]] || die "the suite cannot run a command whose path has a space: $AGENT"

# --- 4. The scenarios ------------------------------------------------------------------------------
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

# run_scenario SIDE SCENARIO ARGS...: runs the suite's SIDE mode (server|client) on SCENARIO with
# ARGS and prints its PASS/FAIL line. It passes when the suite exits 0 (no failed or warning
# check, and in client mode the client exited 0 in time) and at least one check ran.
run_scenario() {
  local side=$1 scenario=$2
  shift 2
  local out="$WORK/results/$side/$scenario"
  mkdir -p "$out"
  local rc=0
  timeout "$SCENARIO_TIMEOUT" "$NODE" "$CLI" "$side" "$@" --scenario "$scenario" \
    --output-dir "$out" >"$out/output.txt" 2>&1 || rc=$?
  local checks_file summary="no checks.json" ok=0 total failures warnings
  checks_file="$(find "$out" -name checks.json -print -quit)"
  if [[ -n "$checks_file" ]] && read -r total failures warnings < <(count_checks "$checks_file"); then
    summary="$total checks, $failures failed, $warnings warnings"
    [[ "$rc" == 0 && "$total" -gt 0 && "$failures" == 0 ]] && ok=1
  fi
  [[ "$rc" == 124 ]] && summary="timed out after ${SCENARIO_TIMEOUT}s; $summary"
  if [[ "$ok" == 1 ]]; then
    printf 'PASS  %-6s %-40s (%s)\n' "$side" "$scenario" "$summary"
    passed=$((passed + 1))
  else
    printf 'FAIL  %-6s %-40s (exit %s; %s)\n' "$side" "$scenario" "$rc" "$summary"
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/      | /' "$out/output.txt" | grep -v 'unknown format' | tail -n 40
    failed=$((failed + 1))
    failed_names+=("$side/$scenario")
  fi
}

# --- 4a. Server side: the orchestrator's front on a free loopback port -----------------------------
if runs server; then
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

  failed_before=$failed
  for scenario in "${SERVER_SCENARIOS[@]}"; do
    run_scenario server "$scenario" --url "$URL"
  done
  if ((failed > failed_before)); then
    log "orchestrator log tail:"
    tail -n 40 "$ORCH_LOG" | sed 's/^/      | /' >&2
  fi
  stop_gracefully "$ORCH_PID"
  ORCH_PID=""
fi

# --- 4b. Client side: the orchestrator's upstream connection, driven by the agent ------------------
# Each run's stderr.txt (in the kept folder) holds the agent's and the orchestrator's log.
if runs client; then
  for scenario in "${CLIENT_SCENARIOS[@]}"; do
    run_scenario client "$scenario" --command "$AGENT" --timeout "$((SCENARIO_TIMEOUT * 1000 - 5000))"
  done
fi

if ((failed > 0)); then
  log "failed: ${failed_names[*]}"
fi
echo "conformance: $passed passed, $failed failed"
((failed == 0))

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

# Pinned; looked up with `npm view node@22 version` and `npm view @modelcontextprotocol/conformance`.
NODE22_VERSION=22.23.3
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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${CONFORMANCE_TOOLS_DIR:-$ROOT/.tools/conformance}"
SCENARIO_TIMEOUT="${CONFORMANCE_TIMEOUT:-120}"
NODE="$TOOLS_DIR/node_modules/node/bin/node"
CLI="$TOOLS_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
CLI_PKG="$TOOLS_DIR/node_modules/@modelcontextprotocol/conformance/package.json"
ORCHESTRATOR="$ROOT/target/debug/mcp-orchestrator"

log() { printf 'conformance: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for tool in npm cargo timeout; do
  command -v "$tool" >/dev/null || die "\`$tool\` is not on PATH"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"
ORCH_PID=""

cleanup() {
  local status=$?
  if [[ -n "$ORCH_PID" ]] && kill -0 "$ORCH_PID" 2>/dev/null; then
    kill -TERM "$ORCH_PID" 2>/dev/null || true
    # The orchestrator finishes in-flight calls and stops its upstreams; give it a moment.
    for _ in $(seq 1 50); do
      kill -0 "$ORCH_PID" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$ORCH_PID" 2>/dev/null; then
      log "orchestrator (pid $ORCH_PID) did not stop on SIGTERM; killing it"
      kill -KILL "$ORCH_PID" 2>/dev/null || true
    fi
    wait "$ORCH_PID" 2>/dev/null || true
  fi
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
installed_versions_ok() {
  [[ -x "$NODE" && -f "$CLI" && -f "$CLI_PKG" ]] || return 1
  [[ "$("$NODE" --version 2>/dev/null)" == "v$NODE22_VERSION" ]] || return 1
  [[ "$("$NODE" -p "require(process.argv[1]).version" "$CLI_PKG" 2>/dev/null)" == "$CONFORMANCE_VERSION" ]]
}

if ! installed_versions_ok; then
  log "installing node@$NODE22_VERSION and @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $TOOLS_DIR"
  rm -rf "$TOOLS_DIR"
  mkdir -p "$TOOLS_DIR"
  # `node` installs its binary from a preinstall script; newer npm releases run dependency
  # install scripts only when allowScripts lists them.
  cat >"$TOOLS_DIR/package.json" <<EOF
{
  "private": true,
  "allowScripts": { "node@$NODE22_VERSION": true }
}
EOF
  npm install --prefix "$TOOLS_DIR" --save-exact --ignore-scripts=false --no-audit --no-fund \
    --loglevel=error "node@$NODE22_VERSION" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
  installed_versions_ok || die "the installed node / conformance versions are not the pinned ones"
fi
log "using node $("$NODE" --version), @modelcontextprotocol/conformance $CONFORMANCE_VERSION"

# --- 2. A config: the repo's mcp.json with absolute commands and throwaway databases -------------
# Relative commands resolve against the config's folder, so the temporary copy makes them absolute
# (and runs the children in the repo root, as the original would); `--data-dir` becomes `:memory:`
# so the run neither needs nor touches ./data.
CONFIG="$WORK/mcp.json"
"$NODE" - "$ROOT/mcp.json" "$CONFIG" "$ROOT" >"$WORK/commands.txt" <<'EOF'
const fs = require('fs');
const path = require('path');
const [src, dst, root] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(src, 'utf8'));
for (const entry of Object.values(config.mcpServers || {})) {
  if (entry.disabled || typeof entry.command !== 'string') continue;
  if (entry.command.includes('/') && !path.isAbsolute(entry.command)) {
    entry.command = path.resolve(root, entry.command);
  }
  entry.cwd = entry.cwd === undefined ? root : path.resolve(root, entry.cwd);
  const args = entry.args || [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--data-dir' && i + 1 < args.length) args[i + 1] = ':memory:';
    else if (args[i].startsWith('--data-dir=')) args[i] = '--data-dir=:memory:';
  }
  console.log(entry.command);
}
fs.writeFileSync(dst, JSON.stringify(config, null, 2));
EOF
UPSTREAMS="$(wc -l <"$WORK/commands.txt")"

# --- 3. The binaries --------------------------------------------------------------------------------
missing=0
[[ -x "$ORCHESTRATOR" ]] || missing=1
while IFS= read -r cmd; do
  if [[ "$cmd" == */* && ! -x "$cmd" ]]; then missing=1; fi
done <"$WORK/commands.txt"
if [[ "$missing" == 1 || "${CONFORMANCE_BUILD:-0}" == 1 ]]; then
  log "building the workspace binaries"
  (cd "$ROOT" && cargo build --workspace --bins) >&2
fi
[[ -x "$ORCHESTRATOR" ]] || die "$ORCHESTRATOR is missing after the build"

# --- 4. The orchestrator on a free loopback port -------------------------------------------------
# Port 0 lets the OS pick a free port; the orchestrator logs the address it bound.
ORCH_LOG="$WORK/orchestrator.log"
env -u MCP_AUTH_TOKEN -u MCP_ORCHESTRATOR_CONFIG RUST_LOG=info MCP_LOG_FORMAT=text \
  "$ORCHESTRATOR" serve --config "$CONFIG" --http 127.0.0.1:0 >"$ORCH_LOG" 2>&1 &
ORCH_PID=$!

URL=""
for _ in $(seq 1 300); do
  URL="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*/mcp' "$ORCH_LOG" | head -n1 | sed 's/^listening on //' || true)"
  [[ -n "$URL" ]] && break
  if ! kill -0 "$ORCH_PID" 2>/dev/null; then
    cat "$ORCH_LOG" >&2
    die "the orchestrator exited before listening"
  fi
  sleep 0.1
done
[[ -n "$URL" ]] || {
  cat "$ORCH_LOG" >&2
  die "the orchestrator did not listen within 30 s"
}
log "orchestrator (pid $ORCH_PID) listening on $URL"

# The front listens before its upstreams are connected; wait for them so the lists are the real
# catalog (a scenario does not need them, so a slow upstream is only reported).
for _ in $(seq 1 300); do
  connected="$(grep -c 'connected server=' "$ORCH_LOG" || true)"
  ((connected >= UPSTREAMS)) && break
  sleep 0.1
done
connected="$(grep -c 'connected server=' "$ORCH_LOG" || true)"
if ((connected < UPSTREAMS)); then
  log "warning: only $connected of $UPSTREAMS upstreams connected; running anyway"
fi

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

#!/usr/bin/env bash
# Real third-party MCP clients against the orchestrator: the MCP Inspector CLI and the official
# Python SDK each list the tools and call a pass-through tool (sql__get_customer) and a composite
# (customer_insights) through the orchestrator, over stdio (the client starts
# `mcp-orchestrator serve`) and over streamable HTTP (with a bearer token). Prints one PASS/FAIL
# line per check and a closing `clients: N passed, M failed` line; exits non-zero if any failed.
#
# The Inspector runs in each protocol era of INSPECTOR_ERAS: `legacy` (its default for an ad-hoc
# server: the initialize handshake) and `auto` (probes `server/discover`, so 2026-07-28 when the
# server offers it). The Python SDK runs in its default mode, which is `auto` too.
#
# Needs: bash, npm (Node 20 is enough to install), python3 >= 3.10 with venv, cargo. Installs,
# into .tools/ (git-ignored; reused while the pinned versions match):
#   .tools/inspector/  node@22 (the Node binary as an npm package) + @modelcontextprotocol/inspector
#   .tools/python/     a venv with the PyPI package `mcp`
#
# Environment:
#   CLIENTS_TOOLS_DIR   where to install (default: <repo>/.tools)
#   CLIENTS_PYTHON      the Python that creates the venv (default: python3)
#   CLIENTS_BUILD=1     run `cargo build --workspace --bins` even when the binaries exist
#   CLIENTS_KEEP=1      keep the temporary folder (config, data, logs, client outputs)
#   CLIENTS_TIMEOUT     seconds one client run may take (default: 60)
set -euo pipefail

# Pinned; looked up with `npm view @modelcontextprotocol/inspector versions` (newest 2.x) and
# `pip index versions mcp` (Node 22's is in scripts/lib.sh).
INSPECTOR_VERSION=2.12.0
MCP_PY_VERSION=2.3.0

INSPECTOR_ERAS=(legacy auto)
CUSTOMER=CUST-0001
PASS_THROUGH=sql__get_customer
COMPOSITE=customer_insights

LOG_PREFIX=clients
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
TOOLS_DIR="${CLIENTS_TOOLS_DIR:-$ROOT/.tools}"
CLIENT_TIMEOUT="${CLIENTS_TIMEOUT:-60}"
INSPECTOR_DIR="$TOOLS_DIR/inspector"
NODE="$INSPECTOR_DIR/node_modules/node/bin/node"
INSPECTOR="$INSPECTOR_DIR/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
VENV="$TOOLS_DIR/python"
PYTHON="$VENV/bin/python"
ORCHESTRATOR="$ROOT/target/debug/mcp-orchestrator"

require_tools npm cargo timeout "${CLIENTS_PYTHON:-python3}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-clients.XXXXXX")"
# Every orchestrator this script starts (directly, or through a client over stdio) carries this
# variable, and so do the upstreams it spawns: how the end finds anything left behind.
RUN_ID="$(basename "$WORK")"
MARKER="MCP_CLIENTS_RUN=$RUN_ID"
ORCH_PID=""

# PIDs of live processes carrying MARKER (Linux /proc; nothing elsewhere).
marked_pids() {
  [[ -d /proc/self ]] || return 0
  grep -lsxzF "$MARKER" /proc/[0-9]*/environ 2>/dev/null | sed -e 's|^/proc/||' -e 's|/environ$||' || true
}

stop_orchestrator() {
  stop_gracefully "$ORCH_PID"
  ORCH_PID=""
}

cleanup() {
  local status=$?
  stop_orchestrator
  local pids
  pids="$(marked_pids)"
  if [[ -n "$pids" ]]; then
    # shellcheck disable=SC2086 # one PID per word
    kill -TERM $pids 2>/dev/null || true
    sleep 1
    pids="$(marked_pids)"
    # shellcheck disable=SC2086
    [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
  fi
  if [[ "${CLIENTS_KEEP:-0}" == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. The clients -------------------------------------------------------------------------------
node22_with "$INSPECTOR_DIR" @modelcontextprotocol/inspector "$INSPECTOR_VERSION"
[[ -f "$INSPECTOR" ]] || die "$INSPECTOR is missing from the installed Inspector"

venv_ok() {
  [[ -x "$PYTHON" ]] || return 1
  [[ "$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" == "$MCP_PY_VERSION" ]]
}

if ! venv_ok; then
  log "installing mcp==$MCP_PY_VERSION (PyPI) into a venv at $VENV"
  rm -rf "$VENV"
  "${CLIENTS_PYTHON:-python3}" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --disable-pip-version-check --no-input -q "mcp==$MCP_PY_VERSION" >&2
  venv_ok || die "the venv does not hold mcp $MCP_PY_VERSION"
fi
log "using node $("$NODE" --version), @modelcontextprotocol/inspector $INSPECTOR_VERSION, $("$PYTHON" --version) with mcp $MCP_PY_VERSION"

# --- 2. A config: the repo's mcp.json with absolute commands and throwaway data folders -----------
# Each `--data-dir` becomes a folder of its own under the temporary folder, seeded on first start
# and shared by this run's orchestrators, so runs do not collide.
CONFIG="$WORK/mcp.json"
throwaway_config "$NODE" "$CONFIG" "$WORK/data" >"$WORK/commands.txt"
UPSTREAMS="$(wc -l <"$WORK/commands.txt")"

# --- 3. The binaries --------------------------------------------------------------------------------
ensure_binaries "$WORK/commands.txt" "${CLIENTS_BUILD:-0}"

# --- Checks ----------------------------------------------------------------------------------------
passed=0
failed=0
failed_names=()
record() { # PASS|FAIL NAME DETAIL
  printf '%s  %-52s (%s)\n' "$1" "$2" "$3"
  if [[ "$1" == PASS ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failed_names+=("$2")
  fi
}

# Judges one Inspector CLI run (`--format json`: the result on stdout as {"result": ...}, an error
# envelope {"error": {code, message}} on stderr). Prints the detail; exits 0 when the check holds.
#   check.cjs list OUT ERR RC NAME...   the listed tools include every NAME
#   check.cjs call OUT ERR RC ID        the call succeeded (isError not true) and its content mentions ID
cat >"$WORK/check.cjs" <<'EOF'
const fs = require('fs');
const [mode, outFile, errFile, rcText, ...want] = process.argv.slice(2);
const rc = Number(rcText);
const out = fs.readFileSync(outFile, 'utf8').trim();
const err = fs.readFileSync(errFile, 'utf8');
const done = (ok, message) => {
  console.log(message.replace(/\s+/g, ' ').slice(0, 500));
  process.exit(ok ? 0 : 1);
};
let doc = null;
try {
  doc = out ? JSON.parse(out) : null;
} catch {}
if (!doc || typeof doc.result !== 'object' || doc.result === null) {
  let envelope = null;
  for (const line of err.split('\n').reverse()) {
    try {
      const j = JSON.parse(line);
      if (j && j.error) { envelope = j.error; break; }
    } catch {}
  }
  const why = rc === 124 || rc === 137 ? 'timed out' : envelope ? `${envelope.code}: ${envelope.message}` : 'no result on stdout';
  done(false, `exit ${rc}; ${why}`);
}
const result = doc.result;
if (mode === 'list') {
  const names = (result.tools || []).map((t) => t.name);
  const missing = want.filter((n) => !names.includes(n));
  if (missing.length) done(false, `${names.length} tools, missing ${missing.join(', ')}: ${names.join(' ')}`);
  if (rc !== 0) done(false, `exit ${rc} with ${names.length} tools`);
  done(true, `${names.length} tools, ${want.join(' and ')} among them`);
} else {
  const id = want[0];
  const text = JSON.stringify([result.content, result.structuredContent]);
  if (result.isError === true) done(false, `exit ${rc}; isError: ${text.slice(0, 300)}`);
  if (!text.includes(id)) done(false, `exit ${rc}; the result does not mention ${id}: ${text.slice(0, 200)}`);
  if (rc !== 0) done(false, `exit ${rc} although the result looks fine`);
  // A composite names the outcome of each step (a degraded one still succeeds).
  const sources = (result._meta && Array.isArray(result._meta.sources)) ? result._meta.sources : [];
  const steps = sources.length ? `; steps ${sources.map((s) => `${s.step} ${s.outcome}`).join(', ')}` : '';
  done(true, `isError=${result.isError === undefined ? 'absent' : result.isError}, mentions ${id}, ${text.length} chars${steps}`);
}
EOF

RUN=0
# inspector_check NAME KIND(list|call) TOOL ARGS...: one Inspector CLI run and its check; ARGS
# (the era, then the server: `--transport http ...`, or `-- COMMAND ARGS...`) follow the method.
inspector_check() {
  local name=$1 kind=$2 tool=$3
  shift 3
  RUN=$((RUN + 1))
  local out="$WORK/inspector/$RUN.out" err="$WORK/inspector/$RUN.err" rc=0 detail
  mkdir -p "$WORK/inspector" "$WORK/home"
  local method=(--method tools/list)
  [[ "$kind" == call ]] && method=(--method tools/call --tool-name "$tool" --tool-arg "customerId=$CUSTOMER")
  # HOME: the Inspector keeps a catalog and client state under ~/.mcp-inspector.
  HOME="$WORK/home" timeout -k 5 "$CLIENT_TIMEOUT" "$NODE" "$INSPECTOR" --cli --format json \
    "${method[@]}" "$@" </dev/null >"$out" 2>"$err" || rc=$?
  local want=("$PASS_THROUGH" "$COMPOSITE")
  [[ "$kind" == call ]] && want=("$CUSTOMER")
  if detail="$("$NODE" "$WORK/check.cjs" "$kind" "$out" "$err" "$rc" "${want[@]}")"; then
    record PASS "$name" "$detail"
  else
    record FAIL "$name" "$detail"
    # The error envelope is in the detail already; show what led to it.
    grep -v -e '^\s*$' -e '^{"error":' "$err" | tail -n 6 | cut -c1-300 | sed 's/^/      | /' || true
  fi
}

# inspector_suite TRANSPORT ERA TARGET_ARGS...: tools/list and the two calls.
inspector_suite() {
  local transport=$1 era=$2
  shift 2
  local prefix="inspector $transport $era:"
  inspector_check "$prefix tools/list" list "" --protocol-era "$era" "$@"
  inspector_check "$prefix tools/call $PASS_THROUGH" call "$PASS_THROUGH" --protocol-era "$era" "$@"
  inspector_check "$prefix tools/call $COMPOSITE" call "$COMPOSITE" --protocol-era "$era" "$@"
}

# python_suite NAME ARGS...: the Python SDK client; its PASS/FAIL lines count here.
python_suite() {
  local name=$1 out="$WORK/python-$1.out" err="$WORK/python-$1.err" rc=0 line seen=0
  shift
  CLIENTS_TOKEN="${TOKEN:-}" timeout -k 5 $((CLIENT_TIMEOUT * 2)) \
    "$PYTHON" "$ROOT/scripts/python_client.py" "$@" </dev/null >"$out" 2>"$err" || rc=$?
  while IFS= read -r line; do
    case "$line" in
      PASS\ *)
        echo "$line"
        passed=$((passed + 1))
        ;;
      FAIL\ *)
        echo "$line"
        failed=$((failed + 1))
        failed_names+=("$(sed -E 's/^FAIL +//; s/ +\(.*$//' <<<"$line")")
        seen=1
        ;;
    esac
  done <"$out"
  if [[ "$rc" != 0 && "$seen" == 0 ]]; then
    record FAIL "python $name: run" "exit $rc; $(grep -v '^\s*$' "$err" | tail -n 1 | cut -c1-300 || true)"
    grep -v '^\s*$' "$err" | tail -n 10 | sed 's/^/      | /' || true
  fi
}

# --- 4. Over streamable HTTP: one orchestrator with a bearer token ------------------------------------
TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
ORCH_LOG="$WORK/orchestrator-http.log"
env -u MCP_AUTH_TOKEN -u MCP_ORCHESTRATOR_CONFIG "$MARKER" RUST_LOG=info MCP_LOG_FORMAT=text \
  "$ORCHESTRATOR" serve --config "$CONFIG" --http 127.0.0.1:0 --token "$TOKEN" >"$ORCH_LOG" 2>&1 &
ORCH_PID=$!

if ! URL="$(wait_for_url "$ORCH_LOG" "$ORCH_PID")"; then
  record FAIL "http: orchestrator listens" "no \`listening on\` line within 30 s; log tail below"
  tail -n 20 "$ORCH_LOG" | sed 's/^/      | /'
else
  log "orchestrator (pid $ORCH_PID) listening on $URL"
  # The first start also seeds the data folders.
  wait_for_upstreams "$ORCH_LOG" "$UPSTREAMS"

  # The token is enforced, so the clients' Authorization header is what lets them in.
  # shellcheck disable=SC2016 # JavaScript, not shell.
  status="$("$NODE" -e '
    fetch(process.argv[1], { method: "POST", headers: { "content-type": "application/json",
      accept: "application/json, text/event-stream" }, body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}" })
      .then((r) => console.log(r.status), (e) => console.log(`error: ${e.message}`));
  ' "$URL")"
  if [[ "$status" == 401 ]]; then
    record PASS "http: a request without the token is refused" "HTTP 401"
  else
    record FAIL "http: a request without the token is refused" "got $status, expected 401"
  fi

  for era in "${INSPECTOR_ERAS[@]}"; do
    inspector_suite http "$era" --transport http --server-url "$URL" --header "Authorization: Bearer $TOKEN"
  done
  python_suite http --http "$URL"
fi
stop_orchestrator

# --- 5. Over stdio: each client starts its own orchestrator -------------------------------------------
for era in "${INSPECTOR_ERAS[@]}"; do
  inspector_suite stdio "$era" -e "$MARKER" -- "$ORCHESTRATOR" serve --config "$CONFIG"
done
python_suite stdio --stdio "$ORCHESTRATOR" "$CONFIG" --stdio-env "$MARKER" --stdio-log "$WORK/python-stdio-orchestrator.log"

# --- 6. Nothing left behind --------------------------------------------------------------------------
leftover=""
for _ in $(seq 1 50); do
  leftover="$(marked_pids | tr '\n' ' ' | sed 's/ $//')"
  [[ -z "$leftover" ]] && break
  sleep 0.1
done
if [[ -z "$leftover" ]]; then
  record PASS "no orchestrator or upstream left running" "checked /proc for $MARKER"
else
  record FAIL "no orchestrator or upstream left running" "still running: $(ps -o pid=,args= -p "${leftover// /,}" 2>/dev/null | tr -s ' ' | paste -sd ";" - || true)"
fi

if ((failed > 0)); then
  log "failed: $(printf '%s; ' "${failed_names[@]}" | sed 's/; $//')"
fi
echo "clients: $passed passed, $failed failed"
((failed == 0))

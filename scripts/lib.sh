# shellcheck shell=bash
# Shared by scripts/conformance.sh and scripts/clients.sh (sourced, not run): the pinned Node 22
# install, a throwaway copy of mcp.json, the binaries, and an orchestrator's HTTP front started and
# stopped. The caller sets LOG_PREFIX (its name in log lines) before sourcing, and ROOT after.

# Pinned; looked up with `npm view node@22 version`.
NODE22_VERSION=22.23.3

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# require_tools TOOL...: dies naming the first one not on PATH.
require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "\`$tool\` is not on PATH"
  done
}

# node22_ok DIR PACKAGE VERSION: DIR holds node@NODE22_VERSION and PACKAGE@VERSION.
node22_ok() {
  local node="$1/node_modules/node/bin/node" manifest="$1/node_modules/$2/package.json"
  [[ -x "$node" && -f "$manifest" ]] || return 1
  [[ "$("$node" --version 2>/dev/null)" == "v$NODE22_VERSION" ]] || return 1
  [[ "$("$node" -p "require(process.argv[1]).version" "$manifest" 2>/dev/null)" == "$3" ]]
}

# node22_with DIR PACKAGE VERSION: installs node@NODE22_VERSION (the Node binary as an npm package,
# since the suites need Node 22 and the machine may have 20) and PACKAGE@VERSION into DIR, unless
# they are there already.
node22_with() {
  local dir=$1 package=$2 version=$3
  node22_ok "$dir" "$package" "$version" && return 0
  log "installing node@$NODE22_VERSION and $package@$version into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  # `node` installs its binary from a preinstall script; newer npm releases run dependency
  # install scripts only when allowScripts lists them.
  cat >"$dir/package.json" <<EOF
{
  "private": true,
  "allowScripts": { "node@$NODE22_VERSION": true }
}
EOF
  npm install --prefix "$dir" --save-exact --ignore-scripts=false --no-audit --no-fund \
    --loglevel=error "node@$NODE22_VERSION" "$package@$version" >&2
  node22_ok "$dir" "$package" "$version" || die "the installed node / $package versions are not the pinned ones"
}

# throwaway_config NODE DST DATA: writes DST, the repo's mcp.json with absolute commands (run in
# the repo root, as the original's would be) and every `--data-dir` replaced: by `:memory:` when
# DATA is `:memory:`, else by DATA/<server name>, so a run neither needs nor touches ./data.
# Prints each server's command, one per line.
throwaway_config() {
  "$1" - "$ROOT/mcp.json" "$2" "$ROOT" "$3" <<'EOF'
const fs = require('fs');
const path = require('path');
const [src, dst, root, data] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(src, 'utf8'));
for (const [name, entry] of Object.entries(config.mcpServers || {})) {
  if (entry.disabled || typeof entry.command !== 'string') continue;
  if (entry.command.includes('/') && !path.isAbsolute(entry.command)) {
    entry.command = path.resolve(root, entry.command);
  }
  entry.cwd = entry.cwd === undefined ? root : path.resolve(root, entry.cwd);
  const args = entry.args || [];
  const dir = data === ':memory:' ? data : path.join(data, name);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--data-dir' && i + 1 < args.length) args[i + 1] = dir;
    else if (args[i].startsWith('--data-dir=')) args[i] = `--data-dir=${dir}`;
  }
  console.log(entry.command);
}
fs.writeFileSync(dst, JSON.stringify(config, null, 2));
EOF
}

# ensure_binaries COMMANDS_FILE FORCE: builds the workspace binaries when the orchestrator or a
# command listed in COMMANDS_FILE is missing, or when FORCE is 1.
ensure_binaries() {
  local missing=0 cmd
  [[ -x "$ORCHESTRATOR" ]] || missing=1
  while IFS= read -r cmd; do
    if [[ "$cmd" == */* && ! -x "$cmd" ]]; then missing=1; fi
  done <"$1"
  if [[ "$missing" == 1 || "$2" == 1 ]]; then
    log "building the workspace binaries"
    (cd "$ROOT" && cargo build --workspace --bins) >&2
  fi
  [[ -x "$ORCHESTRATOR" ]] || die "$ORCHESTRATOR is missing after the build"
}

# wait_for_url LOG PID: prints the URL the orchestrator logged it listens on (port 0 lets the OS
# pick a free one); fails if it exits first or 30 s pass.
wait_for_url() {
  local url=""
  for _ in $(seq 1 300); do
    url="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*/mcp' "$1" | head -n1 | sed 's/^listening on //' || true)"
    [[ -n "$url" ]] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$url" ]] && echo "$url"
}

# wait_for_upstreams LOG N: waits (at most 30 s) until the log says N upstreams connected. The
# front listens before they are, and the checks should meet the real catalog; a slow upstream is
# only reported.
wait_for_upstreams() {
  local connected
  for _ in $(seq 1 300); do
    connected="$(grep -c 'connected server=' "$1" || true)"
    ((connected >= $2)) && return 0
    sleep 0.1
  done
  log "warning: only $connected of $2 upstreams connected; running anyway"
}

# stop_gracefully PID: SIGTERM, up to 10 s for in-flight calls and the upstreams to stop, then
# SIGKILL; reaps it.
stop_gracefully() {
  [[ -n "$1" ]] || return 0
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$1" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$1" 2>/dev/null; then
      log "orchestrator (pid $1) did not stop on SIGTERM; killing it"
      kill -KILL "$1" 2>/dev/null || true
    fi
  fi
  wait "$1" 2>/dev/null || true
}

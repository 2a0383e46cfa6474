#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 30): the mcp.json loader
# (`config`), the workflow template engine (`template`) and the framing every incoming message goes
# through (`frames`). Prints one line per target and a closing `fuzz: N passed, M failed` line;
# exits non-zero when a target crashed (panic, hang past -timeout, or out of memory), leaving the
# input that did it in fuzz/artifacts/<target>/ (replay: `cargo fuzz run <target> <file>`).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs: cargo and a C++ compiler (libFuzzer is built from source). Installs cargo-fuzz when
# missing. Fuzzing needs nightly compiler features; on a stable toolchain they are unlocked with
# RUSTC_BOOTSTRAP=1, for the fuzz build only (fuzz/ is its own workspace, in fuzz/target).
#
# Each run starts from the seeds in fuzz/corpus/<target>/ (kept in git) and from what earlier runs
# found, in fuzz/target/corpus/<target>/ (git-ignored), where new finds go.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none (faster; finds panics and hangs, not memory bugs)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(config template frames)
fi
SANITIZER="${FUZZ_SANITIZER:-address}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
echo "== building ${TARGETS[*]} (sanitizer: $SANITIZER)"
for target in "${TARGETS[@]}"; do
  cargo fuzz build --sanitizer "$SANITIZER" "$target"
done

passed=0
failed=0
for target in "${TARGETS[@]}"; do
  found="target/corpus/$target"
  mkdir -p "$found" "artifacts/$target"
  echo "== $target for ${SECONDS_PER_TARGET}s"
  dict=()
  if [ -f "dict/$target.dict" ]; then
    dict=(-dict="dict/$target.dict")
  fi
  # -timeout: one input taking longer is a hang; -rss_limit_mb: a runaway allocation is a crash.
  if cargo fuzz run --sanitizer "$SANITIZER" "$target" "$found" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" \
    >"target/fuzz-$target.log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "target/fuzz-$target.log")
    echo "PASS $target (${runs:-?} inputs)"
    passed=$((passed + 1))
  else
    echo "FAIL $target: see fuzz/target/fuzz-$target.log; the input is in fuzz/artifacts/$target/"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "target/fuzz-$target.log" | head -n 8 || true
    failed=$((failed + 1))
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Builds every fuzz target (cargo fuzz, libFuzzer, nightly) and runs each for
# a bounded time from the committed seed corpus. Fails on any crash, panic,
# timeout or out-of-memory, printing the input that did it.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS each
#   fuzz/run.sh machine state   some targets
#
# Environment:
#   FUZZ_SECONDS        wall-clock seconds per target (default 60)
#   FUZZ_JOBS           targets run at the same time (default: number of CPUs)
#   FUZZ_TIMEOUT        seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_LIMIT_MB   memory one target may use before it counts as OOM (default 2048)
#   FUZZ_CODEGEN_UNITS  codegen units of the build (default 16; 1 runs a little faster)
#   FUZZ_WORK           where new corpus entries and crash inputs go
#                       (default: a temporary directory, removed on success)
#
# The committed corpus (fuzz/corpus/<target>) is only read. To keep what a
# run found, minimise it into the corpus:
#   cargo +nightly fuzz cmin <target> corpus/<target>   (after copying new files in)
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
timeout=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_LIMIT_MB:-2048}
all=(machine secret flake_ref state run_function)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# cargo fuzz's default build: optimised, with debug assertions and overflow
# checks (which catch arithmetic bugs a release build would wrap silently),
# and AddressSanitizer. 16 codegen units build in a fraction of the time of
# the default 1, for slightly slower runs.
echo "fuzz/run.sh: building ${targets[*]}" >&2
if [ $# -eq 0 ]; then
  # One build for all: the targets share every dependency.
  cargo +nightly fuzz build --codegen-units "${FUZZ_CODEGEN_UNITS:-16}"
else
  for t in "${targets[@]}"; do
    cargo +nightly fuzz build --codegen-units "${FUZZ_CODEGEN_UNITS:-16}" "$t"
  done
fi
# The build must not have changed the committed lock file (cargo fuzz has
# no --locked).
if ! git diff --quiet -- Cargo.lock 2>/dev/null; then
  echo "fuzz/run.sh: the build changed fuzz/Cargo.lock; commit the new lock" >&2
  if [ -n "${CI:-}" ]; then exit 1; fi
fi
bin=target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

work=${FUZZ_WORK:-$(mktemp -d)}
mkdir -p "$work"
echo "fuzz/run.sh: ${seconds}s per target, $jobs at a time, work in $work" >&2

run_one() {
  local t=$1
  mkdir -p "$work/$t" "$work/artifacts"
  "$bin/$t" "$work/$t" "corpus/$t" \
    -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss" \
    -artifact_prefix="$work/artifacts/$t-" -print_final_stats=1 \
    >"$work/$t.log" 2>&1
}

pids=() names=() failed=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!) names+=("$t")
  # Keep at most $jobs fuzzers running.
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
done
for i in "${!pids[@]}"; do
  t=${names[$i]}
  if wait "${pids[$i]}"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    echo "fuzz/run.sh: $t: ok, ${runs:-?} inputs"
  else
    failed+=("$t")
    echo "fuzz/run.sh: $t: FAILED; its log ends:" >&2
    tail -n 40 "$work/$t.log" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: failed: ${failed[*]}; the inputs are in $work/artifacts:" >&2
  ls -l "$work/artifacts" >&2 || true
  echo "reproduce with: cargo +nightly fuzz run <target> <input>" >&2
  exit 1
fi
[ -n "${FUZZ_WORK:-}" ] || rm -rf "$work"

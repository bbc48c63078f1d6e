#!/usr/bin/env bash
# Builds every fuzz target (cargo fuzz, libFuzzer) and runs each for a
# bounded time from the committed seed corpus. Fails on any crash, panic,
# timeout or out-of-memory, printing the input that did it.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS each
#   fuzz/run.sh machine state   some targets
#
# Toolchain: nightly when rustup has one; otherwise the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags), so a machine without nightly
# still fuzzes. AddressSanitizer when the toolchain ships its runtime,
# otherwise no sanitizer (libFuzzer still finds panics, hangs and OOMs).
#
# Environment:
#   FUZZ_SECONDS        wall-clock seconds per target (default 60)
#   FUZZ_JOBS           targets run at the same time (default: number of CPUs)
#   FUZZ_TIMEOUT        seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_LIMIT_MB   memory one target may use before it counts as OOM (default 2048)
#   FUZZ_CODEGEN_UNITS  codegen units of the build (default 16; 1 runs a little faster)
#   FUZZ_TOOLCHAIN      rustup toolchain to build with (default: nightly if installed, else stable)
#   FUZZ_SANITIZER      address or none (default: address if the toolchain has its runtime)
#   FUZZ_CACHE          build cache, shared by every clone on this machine
#                       (default ~/.cache/fabric-fuzz): cargo's target directory,
#                       and the built targets keyed by a hash of every build input
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
cgu=${FUZZ_CODEGEN_UNITS:-16}
all=(machine secret flake_ref state run_function)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
cache=${FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fabric-fuzz}
mkdir -p "$cache"

# The toolchain. A missing nightly cannot be downloaded everywhere (CI may
# reach no rustup server), so the stable compiler stands in: RUSTC_BOOTSTRAP=1
# lets it take the -Z flags cargo fuzz passes. `rustup toolchain list` rather
# than `cargo +nightly`, which may try to install what is missing.
export RUSTUP_AUTO_INSTALL=0
toolchain=${FUZZ_TOOLCHAIN:-}
if [ -z "$toolchain" ] && command -v rustup >/dev/null 2>&1; then
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=nightly
  else
    toolchain=stable
  fi
fi
[ -z "$toolchain" ] || export RUSTUP_TOOLCHAIN=$toolchain
if ! rustc -vV >/dev/null 2>&1; then
  echo "fuzz/run.sh: no working rustc${toolchain:+ for toolchain $toolchain}" >&2
  exit 2
fi
rustc_version=$(rustc -vV)
host=$(sed -n 's/^host: //p' <<<"$rustc_version")
release=$(sed -n 's/^release: //p' <<<"$rustc_version")
case $release in
  *nightly* | *dev*) how="nightly $release" ;;
  *)
    export RUSTC_BOOTSTRAP=1
    how="stable $release with RUSTC_BOOTSTRAP=1 (no nightly toolchain)"
    ;;
esac

# AddressSanitizer needs the toolchain's runtime archive (rustup ships it
# for x86_64 Linux; a distribution's rustc may not).
sanitizer=${FUZZ_SANITIZER:-}
if [ -z "$sanitizer" ]; then
  if compgen -G "$(rustc --print sysroot)/lib/rustlib/$host/lib/librustc-*_rt.asan.a" >/dev/null; then
    sanitizer=address
  else
    sanitizer=none
  fi
fi
echo "fuzz/run.sh: toolchain $how, sanitizer $sanitizer" >&2

# cargo-fuzz at a pinned version, built once per machine into the tools cache.
fuzz_version=0.13.2
if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $fuzz_version" ]; then
  tools=${XDG_CACHE_HOME:-$HOME/.cache}/fabric-tools/cargo-fuzz-$fuzz_version
  if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $fuzz_version" ]; then
    echo "fuzz/run.sh: installing cargo-fuzz $fuzz_version into $tools" >&2
    cargo install cargo-fuzz --locked --version "$fuzz_version" --root "$tools.tmp.$$" >&2
    rm -rf "$tools"
    mv "$tools.tmp.$$" "$tools"
  fi
  export PATH=$tools/bin:$PATH
fi

# The build is keyed by a hash of everything it reads: the sources and
# manifests of the fuzz workspace and of the crates it uses, the compiler, the
# cargo-fuzz version and the flags. A fresh clone of an unchanged tree reuses
# the targets built by an earlier run instead of building them again (several
# minutes). Outside a Git checkout there is no key and the build always runs;
# cargo's own fingerprints in the shared target directory still skip what did
# not change.
key=
if inputs=$(cd .. && git -c core.quotePath=false ls-files --cached --others --exclude-standard \
  --deduplicate -- Cargo.toml Cargo.lock .cargo crates fuzz ':!fuzz/corpus' 2>/dev/null |
  LC_ALL=C sort | while IFS= read -r f; do [ ! -f "$f" ] || printf '%s\n' "$f"; done) &&
  [ -n "$inputs" ]; then
  key=$(
    {
      printf '%s\n' "$rustc_version" "cargo-fuzz $fuzz_version" "sanitizer $sanitizer" \
        "cgu $cgu" "targets ${targets[*]}" "RUSTFLAGS ${RUSTFLAGS:-}" \
        "RUSTC_BOOTSTRAP ${RUSTC_BOOTSTRAP:-}"
      cat "${CARGO_HOME:-$HOME/.cargo}/config.toml" 2>/dev/null || true
      # Every input's name and its content as it is on disk, committed or not.
      printf '%s\n' "$inputs"
      (cd .. && printf '%s\n' "$inputs" | git hash-object --stdin-paths)
    } | sha256sum | cut -c1-32
  )
fi
bin=$cache/bin/$key
if [ -n "$key" ] && [ -d "$bin" ]; then
  echo "fuzz/run.sh: inputs unchanged since an earlier build: using $bin" >&2
  touch "$bin"
else
  echo "fuzz/run.sh: building ${targets[*]}" >&2
  # One build at a time per cache: another run must not replace the targets
  # between this build and their copy below.
  exec 9>"$cache/lock"
  flock 9
  build=(cargo fuzz build --sanitizer "$sanitizer" --codegen-units "$cgu"
    --target-dir "$cache/target")
  # cargo fuzz's default build: optimised, with debug assertions and
  # overflow checks (which catch arithmetic bugs a release build would wrap
  # silently). 16 codegen units build in a fraction of the time of the
  # default 1, for slightly slower runs.
  if [ $# -eq 0 ]; then
    # One build for all: the targets share every dependency.
    "${build[@]}"
  else
    for t in "${targets[@]}"; do "${build[@]}" "$t"; done
  fi
  # The build must not have changed the committed lock file (cargo fuzz has
  # no --locked).
  if ! git diff --quiet -- Cargo.lock 2>/dev/null; then
    echo "fuzz/run.sh: the build changed fuzz/Cargo.lock; commit the new lock" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
  fi
  [ -n "$key" ] || bin=$cache/bin/unkeyed-$$
  rm -rf "$bin.tmp"
  mkdir -p "$bin.tmp"
  for t in "${targets[@]}"; do cp "$cache/target/$host/release/$t" "$bin.tmp/"; done
  rm -rf "$bin"
  mv "$bin.tmp" "$bin"
  # Keep the three newest builds.
  ls -1dt "$cache"/bin/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
  exec 9>&-
fi

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
  echo "reproduce with: $bin/<target> <input>" >&2
  exit 1
fi
[ -n "${FUZZ_WORK:-}" ] || rm -rf "$work"
case $bin in */unkeyed-*) rm -rf "$bin" ;; esac

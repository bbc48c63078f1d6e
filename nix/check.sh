#!/usr/bin/env bash
# Checks the Nix side of Fabric without nixpkgs (CI cannot fetch it):
#
#   1. every .nix file in the repository parses (nix-instantiate --parse);
#   2. the NixOS module's wiring holds, evaluated against the stand-in in
#      nix/tests/ (nix/tests/eval-standin.nix says what that does and does
#      not prove), and what it must refuse fails with the module system's
#      own message (e.g. "The option `…' does not exist");
#   3. flake.nix's outputs and the example fleet flake (examples/hosts)
#      evaluate and compose as intended, with a stand-in for the nixpkgs
#      input (nix/tests/flake-standin.nix);
#   4. a deploy key given to the module as a Nix path never reaches the
#      store, however the configuration is read: evaluated for real where
#      the store is writable, with a public known_hosts file as the control
#      that does get copied;
#   5. the script that moves the agent onto a new definition behaves, run
#      against a real process and lock with systemctl faked
#      (nix/tests/upgrade-script.sh);
#   6. the real `fabric agent` and `fabric bootstrap` converge inside the
#      file-system sandbox the module gives their units, rebuilt with
#      bubblewrap (nix/tests/sandbox-probe.py; as root only, and not inside
#      a Nix build, which sets FABRIC_SKIP_SANDBOX_PROBE=1).
#
# Checks 2 and 3 use nixpkgs' real lib (and module system) instead of the
# stand-in's when FABRIC_NIXPKGS_LIB names a copy of it: a checkout of
# nixpkgs or of nix-community/nixpkgs.lib (README.md, "Checking the Nix
# side").
#
# Usage: nix/check.sh [REPO_ROOT]   (default: the repository this script is in)
# Needs nix-instantiate (Debian: nix-bin), python3 and flock (util-linux).
# Exit 0 when all checks pass.
set -euo pipefail

root=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"}

# With FABRIC_NIXPKGS_LIB naming a copy of nixpkgs' lib (a nixpkgs or
# nix-community/nixpkgs.lib checkout), the evaluations below use its module
# system instead of the stand-in's (nix/tests/module-system.nix). Made
# absolute here, before the cd, so a relative path means what the caller
# meant.
if [ -n "${FABRIC_NIXPKGS_LIB:-}" ]; then
  if ! lib_dir=$(cd "$FABRIC_NIXPKGS_LIB" 2>/dev/null && pwd); then
    echo "nix/check.sh: FABRIC_NIXPKGS_LIB=$FABRIC_NIXPKGS_LIB is not a directory" >&2
    exit 2
  fi
  export FABRIC_NIXPKGS_LIB=$lib_dir
fi

cd "$root"

# Offline, as everywhere in Fabric's tests.
export NIX_CONFIG='experimental-features = nix-command flakes
substituters =
sandbox = false'

if ! command -v nix-instantiate >/dev/null 2>&1; then
  echo "nix/check.sh: nix-instantiate not found; install Nix (Debian: apt-get install nix-bin)" >&2
  exit 2
fi

parsed=0
unparsable=0
while IFS= read -r -d '' file; do
  if nix-instantiate --parse "$file" >/dev/null; then
    parsed=$((parsed + 1))
  else
    echo "nix/check.sh: $file does not parse" >&2
    unparsable=$((unparsable + 1))
  fi
done < <(find . \( -name target -o -name .git -o -name result \) -prune -o -type f -name '*.nix' -print0 | sort -z)

if [ $((parsed + unparsable)) -eq 0 ]; then
  echo "nix/check.sh: found no .nix files under $root" >&2
  exit 1
fi
echo "nix-parse: $parsed passed, $unparsable failed"
if [ "$unparsable" -ne 0 ]; then
  exit 1
fi

# The evaluations throw, naming every failed check, when the wiring breaks.
# --readonly-mode: they copy nothing to the store, so this also works
# without write access to /nix.
summary=$(nix-instantiate --readonly-mode --eval --strict nix/tests/eval-standin.nix -A summary)
echo "nix-standin: ${summary//\"/}"
summary=$(nix-instantiate --readonly-mode --eval --strict nix/tests/flake-standin.nix -A summary)
echo "flake-standin: ${summary//\"/}"

# Each configuration in `refusals` must fail, and with its own message
# (builtins.tryEval cannot tell one error from another, so each is a
# separate evaluation).
refused=0
wrong=0
while IFS= read -r name; do
  message=$(nix-instantiate --readonly-mode --eval --strict --json nix/tests/eval-standin.nix -A "refusalMessages.$name")
  message=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]))' "$message")
  if output=$(nix-instantiate --readonly-mode --eval --strict nix/tests/eval-standin.nix -A "refusals.$name.value" 2>&1); then
    echo "nix/check.sh: refusal $name: evaluated to $output, but should fail with: $message" >&2
    wrong=$((wrong + 1))
  elif [[ "$output" != *"$message"* ]]; then
    echo "nix/check.sh: refusal $name: should fail with: $message" >&2
    echo "$output" | sed 's/^/    /' >&2
    wrong=$((wrong + 1))
  else
    refused=$((refused + 1))
  fi
done < <(nix-instantiate --readonly-mode --eval --strict --json nix/tests/eval-standin.nix -A refusalMessages |
  python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')
echo "nix-refusals: $refused passed, $wrong failed"
if [ "$refused" -eq 0 ] || [ "$wrong" -ne 0 ]; then
  exit 1
fi

# A deploy key given as a Nix path must never reach the store, however the
# configuration is read: the system, the unit's command line, the agent's
# definition hash. This evaluates for real (--read-write-mode), so a
# path that got interpolated would be copied; then the key's store path
# must not exist. The control: a known_hosts Nix path (public, allowed)
# is copied by the same evaluation of the unit.
if [ -w "$(nix-instantiate --eval -E builtins.storeDir | tr -d '"')" ]; then
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  # Unique contents, so no earlier run left the same store path behind.
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$probe/deploy-key"
  cp "$probe/deploy-key" "$probe/known_hosts"
  echo " control" >>"$probe/known_hosts"
  store_path() {
    nix-instantiate --readonly-mode --eval -E "\"\${$1}\"" | tr -d '"'
  }
  key_path=$(store_path "$probe/deploy-key")
  hosts_path=$(store_path "$probe/known_hosts")
  credentials="{ sshKeyFile = $probe/deploy-key; knownHostsFile = $probe/known_hosts; }"
  standin="(import $root/nix/tests/eval-standin.nix)"
  stored=0
  for read in \
    "$standin.credentialSystem $credentials" \
    "($standin.credentialUnit $credentials).serviceConfig.ExecStart" \
    "($standin.credentialUnit $credentials).environment.FABRIC_AGENT_DEFINITION"; do
    if output=$(nix-instantiate --eval --read-write-mode --strict -E "$read" 2>&1); then
      echo "nix/check.sh: store probe: $read evaluated, but a Nix path for sshKeyFile must be refused" >&2
      stored=1
    elif [[ "$output" != *"services.fabric.credentials.sshKeyFile is the Nix path $probe/deploy-key"* ]]; then
      echo "nix/check.sh: store probe: $read failed, but not with the Nix path refusal:" >&2
      echo "$output" | sed 's/^/    /' >&2
      stored=1
    fi
  done
  if [ -e "$key_path" ]; then
    echo "nix/check.sh: store probe: the deploy key reached the store: $key_path" >&2
    stored=1
  fi
  # The control: with the key given as a string, the known_hosts path is
  # interpolated, hence copied.
  nix-instantiate --eval --read-write-mode --strict -E "($standin.credentialUnit { sshKeyFile = \"/run/secrets/k\"; knownHostsFile = $probe/known_hosts; }).serviceConfig.ExecStart" >/dev/null
  if [ ! -e "$hosts_path" ]; then
    echo "nix/check.sh: store probe: the control known_hosts was not copied to $hosts_path; the probe proves nothing" >&2
    stored=1
  fi
  nix-store --delete "$hosts_path" >/dev/null 2>&1 || true
  if [ "$stored" -ne 0 ]; then
    exit 1
  fi
  echo "store-probe: a deploy key given as a Nix path stays out of the store (control copied)"
else
  echo "store-probe: skipped: the Nix store is not writable here"
fi

bash nix/tests/upgrade-script.sh

if [ "${FABRIC_SKIP_SANDBOX_PROBE:-0}" = 1 ]; then
  echo "sandbox-probe: skipped (FABRIC_SKIP_SANDBOX_PROBE=1)"
elif [ "$(id -u)" != 0 ]; then
  echo "sandbox-probe: skipped: it needs root, as the units run as root"
else
  if ! command -v bwrap >/dev/null 2>&1; then
    echo "nix/check.sh: installing bubblewrap for the sandbox probe" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
  fi
  cargo build -q --locked -p fabric
  python3 nix/tests/sandbox-probe.py "${CARGO_TARGET_DIR:-target}/debug/fabric"
fi

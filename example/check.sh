#!/bin/sh
# Renders every example through `fabric compose` and validates the composed
# resources with oracles/check-composed (the provider CRDs in oracles/crds,
# strictly: unknown fields are errors, required parameters must be present).
#
#   example/check.sh [FABRIC_BINARY]       default: target/debug/fabric
#
# CHECK_COMPOSED overrides the checker (default: oracles/check-composed). Exit 0 when every stage of every example composes
# the expected resources and all of them are valid.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FABRIC=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/fabric}
CHECK=${CHECK_COMPOSED:-$ROOT/oracles/check-composed}
EX=$ROOT/example
[ -x "$FABRIC" ] || { echo "check.sh: no fabric binary at $FABRIC (cargo build -p fabric)" >&2; exit 2; }
[ -x "$CHECK" ] || { echo "check.sh: no check-composed at $CHECK (set CHECK_COMPOSED)" >&2; exit 2; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
failed=0

# name, expected kinds (space-separated, in output order), compose arguments...
stage() {
  name=$1 want=$2
  shift 2
  echo "== $name: fabric compose $*" | sed "s#$ROOT/##g"
  if ! "$FABRIC" compose "$@" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    echo "FAIL $name: fabric compose exited non-zero" >&2
    cat "$OUT/$name.err" >&2
    failed=1
    return
  fi
  got=$(sed -n 's/^kind: //p' "$OUT/$name.yaml" | tr '\n' ' ' | sed 's/ $//')
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: composed [$got], expected [$want]" >&2
    failed=1
    return
  fi
  "$CHECK" "$OUT/$name.yaml" || failed=1
}

stage bpg-snippet "EnvironmentFile EnvironmentFile EnvironmentFile" \
  "$EX/xr.yaml" --input "$EX/composition.yaml" --secret "$EX/secret.yaml"
stage bpg-vm "EnvironmentFile EnvironmentFile EnvironmentFile EnvironmentVM" \
  "$EX/xr.yaml" --input "$EX/composition.yaml" --secret "$EX/secret.yaml" \
  --observed "$EX/observed/snippet-ready.yaml"
stage bpg-ready "EnvironmentFile EnvironmentFile EnvironmentFile EnvironmentVM" \
  "$EX/xr.yaml" --input "$EX/composition.yaml" --secret "$EX/secret.yaml" \
  --observed "$EX/observed/vm-ready.yaml"
stage terraform "Workspace" \
  "$EX/xr.yaml" --input "$EX/composition-terraform.yaml" --secret "$EX/secret.yaml"
stage terraform-ready "Workspace" \
  "$EX/xr.yaml" --input "$EX/composition-terraform.yaml" --secret "$EX/secret.yaml" \
  --observed "$EX/observed/workspace-ready.yaml"
stage xmachine-snippet "EnvironmentFile EnvironmentFile" \
  "$EX/xmachine.yaml" --input "$EX/composition-xmachine.yaml"
stage xmachine-vm "EnvironmentFile EnvironmentFile EnvironmentVM" \
  "$EX/xmachine.yaml" --input "$EX/composition-xmachine.yaml" \
  --observed "$EX/observed/xmachine-snippet-ready.yaml"
stage xmachine-terraform "Workspace" \
  "$EX/xmachine.yaml" --input "$EX/composition-terraform.yaml"

# A private fleet: the deploy key reaches the user-data snippet only.
stage private-fleet-bpg "EnvironmentFile EnvironmentFile EnvironmentFile" \
  "$EX/private-fleet.yaml" --input "$EX/composition.yaml" --secret "$EX/private-fleet-secret.yaml"
stage private-fleet-terraform "Workspace" \
  "$EX/private-fleet.yaml" --input "$EX/composition-terraform.yaml" --secret "$EX/private-fleet-secret.yaml"
for name in private-fleet-bpg private-fleet-terraform; do
  if grep -q "BEGIN OPENSSH PRIVATE KEY" "$OUT/$name.err"; then
    echo "FAIL $name: the key reached stderr" >&2
    failed=1
  elif ! grep -q "/etc/fabric/credentials/ssh-key" "$OUT/$name.yaml"; then
    echo "FAIL $name: the snippet does not deliver the key" >&2
    failed=1
  fi
done

# Without its Secret the example composes nothing (no VM before the keys
# are known) and says why, without failing.
echo "== bpg-without-secret"
if "$FABRIC" compose "$EX/xr.yaml" --input "$EX/composition.yaml" >"$OUT/nosecret.yaml" 2>"$OUT/nosecret.err" \
  && [ ! -s "$OUT/nosecret.yaml" ] && grep -q "default/admin-keys" "$OUT/nosecret.err"; then
  echo "ok: nothing composed, waiting for Secret default/admin-keys"
else
  echo "FAIL bpg-without-secret" >&2
  cat "$OUT/nosecret.yaml" "$OUT/nosecret.err" >&2
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "check.sh: some examples failed" >&2
  exit 1
fi
echo "check.sh: every example composes valid resources"

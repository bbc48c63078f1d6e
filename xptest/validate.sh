#!/usr/bin/env bash
# Crossplane's validators read Fabric: `crossplane resource validate
# --error-on-missing-schemas` (OpenAPI schema, pruning: unknown fields are
# errors, defaulting, CEL) on
#   - every Crossplane object Fabric ships, against Crossplane's own CRDs;
#   - every Input in a shipped Composition, against package/input's CRD;
#   - every render output: the composed managed resources against the
#     providers' CRDs (oracles/crds), the XR against the CRD Crossplane
#     generates from Fabric's XRD.
# Offline: Crossplane's CRDs are pre-filled in the validate cache under the
# image named by --crossplane-image, so no image is pulled.
#
#   xptest/validate.sh WORK_DIR      (xptest/run sets XP_CLI, XP_CRDS)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$1
: "${XP_CLI:?run from xptest/run}" "${XP_CRDS:?run from xptest/run}"

image=xpkg.crossplane.io/crossplane/crossplane:v2.3.4
cache=$work/validate-cache
entry=$cache/${image//:/@}
mkdir -p "$entry" "$work/validate"
for crd in "$XP_CRDS"/*.yaml; do cat "$crd"; echo "---"; done >"$entry/package.yaml"

failed=0
validate() { # NAME EXTENSIONS RESOURCES
  local name=$1 out=$work/validate/$1.txt
  local total
  if "$XP_CLI" resource validate --error-on-missing-schemas --skip-success-results \
    --cache-dir "$cache" --crossplane-image "$image" "$2" "$3" >"$out" 2>&1; then
    total=$(sed -n 's/^Total \([0-9]*\) resources.*/\1/p' "$out")
    if [ "${total:-0}" -gt 0 ]; then
      echo "ok   validate $name: $(tail -n 1 "$out")"
    else
      echo "FAIL validate $name: nothing was validated" >&2
      failed=1
    fi
  else
    echo "FAIL validate $name:" >&2
    cat "$out" >&2
    failed=1
  fi
  # Any line about downloading means the run was not offline.
  if grep -q "downloading" "$out"; then
    echo "FAIL validate $name: tried to download a package" >&2
    failed=1
  fi
}

# Crossplane's own CRDs come from the cache; validate also checks each
# Composition's pipeline Input, against package/input's CRD.
shipped=apis/machines/definition.yaml,apis/machines/composition.yaml
shipped+=,apis/xmachines/definition.yaml,apis/xmachines/composition.yaml
shipped+=,example/composition.yaml,example/composition-terraform.yaml,example/composition-xmachine.yaml
shipped+=,example/functions.yaml,example/runtime-config.yaml
validate shipped-crossplane-objects package/input "$shipped"

# A kind's XR and its composed resources, against its XRD and the
# providers' CRDs. One XRD at a time: both define a Machine kind in the
# same group (the XR of one, the claim of the other).
validate render-machine oracles/crds,apis/machines/definition.yaml "$work/render/machine"
validate render-xmachine oracles/crds,apis/xmachines/definition.yaml "$work/render/xmachine"

exit $failed

# Sourced by the Python checkers' wrappers: Debian's python3 with Debian's
# PyYAML (the YAML loader cloud-init itself uses) and jsonschema, installed
# when missing. FABRIC_ORACLES_PYTHON names another interpreter with both.
PY=${FABRIC_ORACLES_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import yaml, jsonschema' 2>/dev/null; then
  if [ -n "${FABRIC_ORACLES_PYTHON:-}" ]; then
    echo "oracles: $PY cannot import yaml and jsonschema" >&2
    exit 2
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "oracles: $PY needs PyYAML and jsonschema: apt-get install python3-yaml python3-jsonschema" >&2
    exit 2
  fi
  echo "oracles: installing python3-yaml python3-jsonschema" >&2
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    python3 python3-yaml python3-jsonschema >/dev/null
  "$PY" -c 'import yaml, jsonschema' || { echo "oracles: $PY still cannot import yaml and jsonschema" >&2; exit 2; }
fi

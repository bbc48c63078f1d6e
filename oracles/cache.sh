# Sourced by the oracles' scripts: where their caches live, and how they
# install the Debian packages they drive.
#
# FABRIC_ORACLES_CACHE overrides the cache directory. The default is
# /var/cache/fabric/oracles for root (the container roots need root anyway)
# and ${XDG_CACHE_HOME:-~/.cache}/fabric/oracles for anyone else.
if [ -n "${FABRIC_ORACLES_CACHE:-}" ]; then
  ORACLES_CACHE=$FABRIC_ORACLES_CACHE
elif [ "$(id -u)" = 0 ]; then
  ORACLES_CACHE=/var/cache/fabric/oracles
else
  ORACLES_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fabric/oracles
fi

# need_packages COMMAND=PACKAGE...: installs, in one apt transaction, the
# packages whose command is missing, then checks every command again.
need_packages() {
  _missing=""
  for _pair in "$@"; do
    command -v "${_pair%%=*}" >/dev/null 2>&1 || _missing="$_missing ${_pair#*=}"
  done
  [ -z "$_missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "oracles: missing Debian packages:$_missing (install them as root)" >&2
    return 1
  fi
  echo "oracles: installing$_missing" >&2
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $_missing >/dev/null
  for _pair in "$@"; do
    command -v "${_pair%%=*}" >/dev/null 2>&1 || {
      echo "oracles: ${_pair%%=*} is still missing after installing ${_pair#*=}" >&2
      return 1
    }
  done
}

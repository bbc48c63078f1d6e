#!/usr/bin/env bash
# Fabric's whole test suite, with its prerequisites.
#
# Needs root: it installs with apt what the tests drive for real when it is
# missing (Debian/Ubuntu: cloud-init, nix-bin, git, debootstrap,
# systemd-container, python3-yaml, python3-jsonschema, and the ISO readers
# genisoimage, xorriso, libarchive-tools, p7zip-full, libcdio-utils, and the
# servers the private-fleet tests fetch through: openssh-server,
# openssh-client, lighttpd with lighttpd-mod-openssl, openssl), creates
# the nixbld group and build users, configures Nix for offline use, fetches
# cloud-init's schemas from Debian (once) and builds the Debian root the
# cloud-init tests run in (once, a few minutes; see oracles/README.md), then
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

sudo=""
if [ "$(id -u)" != 0 ]; then
  if [ "${FABRIC_SKIP_ORACLES:-}" != 1 ]; then
    echo "test.sh: needs root: it installs Debian packages, creates the nixbld users, and runs" >&2
    echo "  cloud-init in a container (sudo ./test.sh). FABRIC_SKIP_ORACLES=1 skips the tests that need it." >&2
    exit 2
  fi
  sudo=sudo
fi

missing=()
command -v cloud-init >/dev/null 2>&1 || missing+=(cloud-init)
command -v nix >/dev/null 2>&1 || missing+=(nix-bin)
command -v isoinfo >/dev/null 2>&1 || missing+=(genisoimage)
# More independent ISO 9660 readers for the seed image.
command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
command -v bsdtar >/dev/null 2>&1 || missing+=(libarchive-tools)
command -v 7z >/dev/null 2>&1 || missing+=(p7zip-full)
command -v iso-info >/dev/null 2>&1 || missing+=(libcdio-utils)
command -v git >/dev/null 2>&1 || missing+=(git)
# The credential tests (crates/fabric-converge/tests/credential.rs): a real
# sshd and a real git http-backend behind lighttpd with TLS, on loopback.
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
# Debian 12 ships lighttpd's TLS module in a package of its own.
[ -e /usr/lib/lighttpd/mod_openssl.so ] || missing+=(lighttpd-mod-openssl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The project's oracles (oracles/): a debootstrapped root run with
# systemd-nspawn, and checkers on Debian's Python.
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
/usr/bin/python3 -c 'import yaml, jsonschema' >/dev/null 2>&1 || missing+=(python3 python3-yaml python3-jsonschema)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for c in cloud-init nix isoinfo xorriso bsdtar 7z iso-info git debootstrap systemd-nspawn \
    /usr/sbin/sshd ssh-keygen /usr/sbin/lighttpd openssl; do
    command -v "$c" >/dev/null 2>&1 || { echo "test.sh: $c is still missing after installing ${missing[*]}" >&2; exit 1; }
  done
  /usr/bin/python3 -c 'import yaml, jsonschema' || { echo "test.sh: Debian's python3 still lacks yaml or jsonschema" >&2; exit 1; }
  [ -e /usr/lib/lighttpd/mod_openssl.so ] || { echo "test.sh: lighttpd's mod_openssl is still missing after installing ${missing[*]}" >&2; exit 1; }
  # Debian starts the services of the servers it installs, listening on
  # every address; the tests run their own on loopback. Stop and disable
  # the ones this script installed (never ones that were already there).
  if [ -d /run/systemd/system ]; then
    for pkg_unit in openssh-server:ssh.service lighttpd:lighttpd.service; do
      case " ${missing[*]} " in
        *" ${pkg_unit%%:*} "*) $sudo systemctl disable --now "${pkg_unit#*:}" >/dev/null 2>&1 || true ;;
      esac
    done
  fi
fi

# Debian's nix-bin alone does not create the build users (nix-setup-systemd
# does, along with a daemon the tests do not want), and a root nix refuses to
# build without the `nixbld` group its default configuration names.
if ! getent group nixbld >/dev/null; then
  echo "test.sh: creating the nixbld group and build users" >&2
  $sudo groupadd --system nixbld
  for i in 1 2 3 4 5 6 7 8; do
    $sudo useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
      --gid nixbld --groups nixbld "nixbld$i"
  done
fi

# Real Nix, offline: no binary cache, no sandbox (no user namespaces needed).
export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters =\nsandbox = false'
# Git identities for the test flakes' commits.
export GIT_AUTHOR_NAME=${GIT_AUTHOR_NAME:-fabric-test} GIT_AUTHOR_EMAIL=${GIT_AUTHOR_EMAIL:-test@fabric.invalid}
export GIT_COMMITTER_NAME=${GIT_COMMITTER_NAME:-fabric-test} GIT_COMMITTER_EMAIL=${GIT_COMMITTER_EMAIL:-test@fabric.invalid}

# The oracles' caches, built here with a progress line rather than inside a
# test that would sit silent for minutes.
if [ "$(id -u)" = 0 ]; then
  oracles/cloud-init-schemas >/dev/null
  oracles/cloud-init-run --build-root
fi

# Terraform and the bpg Terraform provider for the Terraform checks (README.md,
# "Terraform checks"): built once per version, then cached.
if [ -z "${FABRIC_TERRAFORM:-}" ]; then
  eval "$(tftest/tools.sh)"
fi

exec cargo test --workspace --locked "$@"

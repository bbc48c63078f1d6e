#!/usr/bin/env bash
# Fabric's whole test suite, with its prerequisites.
#
# Installs what the tests drive for real when it is missing (Debian/Ubuntu:
# cloud-init, nix-bin, genisoimage and other ISO readers, git), configures Nix for offline use, and
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

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
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's nix-bin alone does not create the build users (nix-setup-systemd
# does, along with a daemon the tests do not want), and a root nix refuses to
# build without the `nixbld` group its default configuration names.
if ! getent group nixbld >/dev/null; then
  echo "test.sh: creating the nixbld group and build users" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
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

# Terraform and the bpg Terraform provider for the Terraform checks (README.md,
# "Terraform checks"): built once per version, then cached.
if [ -z "${FABRIC_TERRAFORM:-}" ]; then
  eval "$(tftest/tools.sh)"
fi

exec cargo test --workspace --locked "$@"

#!/usr/bin/env bash
# Installs or builds what the Terraform checks (README.md, "Terraform
# checks") run, idempotently, and prints on stdout the environment the tests
# read:
#
#   eval "$(tftest/tools.sh)"
#
# - Terraform: FABRIC_TERRAFORM when set, else the machine's own `terraform`,
#   else (or with FABRIC_TERRAFORM_BUILD=1) Terraform $TERRAFORM_VERSION
#   built from the Go module proxy.
# - The bpg Terraform provider (bpg/terraform-provider-proxmox
#   $BPG_PROVIDER_VERSION, the one provider-proxmox-bpg v1.18 wraps), built
#   from the Go module proxy and laid out as a Terraform filesystem mirror.
#
# Builds are cached by version under ${XDG_CACHE_HOME:-~/.cache}/fabric-tools/
# and reused; a new version builds afresh. What was built, and how long it
# took, goes to stderr. Builds run at `nice -n 10`: the host is shared.
set -euo pipefail

TERRAFORM_VERSION=1.11.4
BPG_PROVIDER_VERSION=0.111.1

cache=${XDG_CACHE_HOME:-$HOME/.cache}/fabric-tools
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "tftest/tools.sh: $*" >&2; }
# Stdout is for the lines the caller evaluates; anything a build prints
# goes to stderr (a stray line on stdout would be evaluated as a command).
exec 3>&1 1>&2

# Go, for the builds: the machine's own when it is recent enough, else the
# release the modules ask for, fetched as the golang.org/toolchain module
# from the Go module proxy (Debian 12's golang-go, 1.19, is too old to build
# them or to fetch a newer toolchain itself).
GO_VERSION=1.26.0
need_go() {
  local minor=0
  if command -v go >/dev/null 2>&1; then
    minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  fi
  if [ "${minor:-0}" -ge 21 ]; then
    # Go 1.21 or later: it fetches the toolchain a go.mod asks for.
    export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
  else
    local arch goroot
    arch=$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
    goroot=$cache/go-$GO_VERSION/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch
    if [ ! -x "$goroot/bin/go" ]; then
      say "fetching Go $GO_VERSION from the Go module proxy"
      command -v unzip >/dev/null 2>&1 || {
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends unzip curl ca-certificates >/dev/null
      }
      rm -rf "$cache/go-$GO_VERSION.tmp"
      mkdir -p "$cache/go-$GO_VERSION.tmp"
      curl -fsSL -o "$cache/go-$GO_VERSION.tmp/go.zip" \
        "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
      (cd "$cache/go-$GO_VERSION.tmp" && unzip -q go.zip && rm go.zip)
      rm -rf "$cache/go-$GO_VERSION"
      mv "$cache/go-$GO_VERSION.tmp" "$cache/go-$GO_VERSION"
    fi
    export PATH=$goroot/bin:$PATH GOROOT=$goroot GOTOOLCHAIN=local
  fi
  export GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0
}

# The bpg provider, as <mirror>/registry.terraform.io/bpg/proxmox/<v>/<os>_<arch>/.
provider_dir=$cache/terraform-provider-proxmox-$BPG_PROVIDER_VERSION
mirror=$provider_dir/mirror
platform=$(uname -s | tr '[:upper:]' '[:lower:]')_$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
provider_bin=$mirror/registry.terraform.io/bpg/proxmox/$BPG_PROVIDER_VERSION/$platform/terraform-provider-proxmox_v$BPG_PROVIDER_VERSION
if [ -x "$provider_bin" ]; then
  say "bpg/terraform-provider-proxmox $BPG_PROVIDER_VERSION: cached at $provider_bin"
else
  need_go
  say "building bpg/terraform-provider-proxmox $BPG_PROVIDER_VERSION from the Go module proxy"
  started=$(date +%s)
  rm -rf "$provider_dir.tmp"
  mkdir -p "$provider_dir.tmp"
  # From a go.mod of ours (tftest/bpg-provider) pinning the provider and,
  # through go.sum, every module it builds from: `go install module@version`
  # would ask the proxy for the module's version list, which it refuses.
  cp "$here/bpg-provider/go.mod" "$here/bpg-provider/go.sum" "$provider_dir.tmp/"
  mkdir -p "$provider_dir.tmp/mirror/registry.terraform.io/bpg/proxmox/$BPG_PROVIDER_VERSION/$platform"
  (cd "$provider_dir.tmp" && nice -n 10 go build -mod=readonly \
    -o "mirror/registry.terraform.io/bpg/proxmox/$BPG_PROVIDER_VERSION/$platform/terraform-provider-proxmox_v$BPG_PROVIDER_VERSION" \
    github.com/bpg/terraform-provider-proxmox)
  rm -rf "$provider_dir"
  mv "$provider_dir.tmp" "$provider_dir"
  say "built bpg/terraform-provider-proxmox $BPG_PROVIDER_VERSION in $(( $(date +%s) - started ))s"
fi

# Terraform: FABRIC_TERRAFORM, else the machine's own, else the pinned build.
terraform=${FABRIC_TERRAFORM:-}
if [ -z "$terraform" ] && [ -z "${FABRIC_TERRAFORM_BUILD:-}" ] && command -v terraform >/dev/null 2>&1; then
  terraform=$(command -v terraform)
fi
if [ -z "$terraform" ]; then
  terraform_dir=$cache/terraform-$TERRAFORM_VERSION
  terraform=$terraform_dir/bin/terraform
  if [ -x "$terraform" ]; then
    say "terraform $TERRAFORM_VERSION: cached at $terraform"
  else
    need_go
    say "building terraform $TERRAFORM_VERSION from the Go module proxy"
    started=$(date +%s)
    rm -rf "$terraform_dir.tmp"
    mkdir -p "$terraform_dir.tmp/bin"
    # Terraform's own go.mod points its nested modules (the remote-state
    # backends, internal/legacy) at its source tree with `replace`, which
    # `go install module@version` refuses, and the release's module zip
    # leaves them out. The go.mod of tftest/terraform-build requires each
    # at the release's commit instead; every other version is Terraform's.
    cp "$here/terraform-build/go.mod" "$here/terraform-build/go.sum" "$terraform_dir.tmp/"
    # version.dev=no is what Terraform's release builds set: without it the
    # binary calls itself 1.11.4-dev.
    (cd "$terraform_dir.tmp" && nice -n 10 go build -mod=readonly \
      -ldflags "-X github.com/hashicorp/terraform/version.dev=no" \
      -o bin/terraform github.com/hashicorp/terraform)
    rm -rf "$terraform_dir"
    mv "$terraform_dir.tmp" "$terraform_dir"
    say "built terraform $TERRAFORM_VERSION in $(( $(date +%s) - started ))s"
  fi
fi
say "terraform: $terraform ($(TF_CLI_CONFIG_FILE=/dev/null "$terraform" version | head -1))"

printf 'export FABRIC_TERRAFORM=%q\n' "$terraform" >&3
printf 'export FABRIC_TERRAFORM_PROVIDER_MIRROR=%q\n' "$mirror" >&3
printf 'export FABRIC_TERRAFORM_PROVIDER_VERSION=%q\n' "$BPG_PROVIDER_VERSION" >&3

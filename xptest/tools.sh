#!/usr/bin/env bash
# Builds Crossplane's own tools from the Go module proxy at pinned versions:
# the CLI (render, validate, xpkg build) and the core binary whose
# `crossplane internal render` is Crossplane's real composite reconciler.
# Each goes to its own cache directory keyed by version, so a warm run does
# nothing and a version bump rebuilds from scratch.
#
# Prints the directories as shell assignments on stdout (for `eval`), and
# progress plus build times on stderr.
set -euo pipefail

CLI_VERSION=v2.5.0
CORE_VERSION=v2.3.4
CACHE="${FABRIC_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fabric-tools}"
VERSION_PKG=github.com/crossplane/crossplane-runtime/v2/pkg/version.version

command -v go >/dev/null || { echo "xptest/tools.sh: go is not on PATH (Go >= 1.26 is needed)" >&2; exit 1; }

log() { echo "xptest/tools.sh: $*" >&2; }
# Stdout is for the lines the caller evaluates; anything a build prints
# goes to stderr (a stray line on stdout would be evaluated as a command).
exec 3>&1 1>&2

# A finished build writes its stamp last, so an interrupted one is redone.
built() { [[ -x "$1/bin/crossplane" && -f "$1/.complete" ]]; }

# Both tools are built from a throwaway module of our own that requires them
# at the pinned tag (`go get -tool`, then `go build`). Not `go install
# pkg@version`: it looks the module's version list up for deprecations, and
# the curated module proxy refuses list requests (403), failing the install.
# The core needs this anyway: its go.mod replaces its apis module with
# ./apis, which `go install pkg@version` refuses, so our module requires the
# apis module at the same tag.
#   build_tool NAME VERSION MAIN_PACKAGE [EXTRA_MODULE@VERSION...]
build_tool() {
  local name=$1 version=$2 main=$3
  shift 3
  local dir="$CACHE/$name-$version"
  if built "$dir"; then log "$name $version cached in $dir"; return; fi
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$CACHE/.$name.XXXXXX")"
  building=$tmp
  log "building $name $version (go $(go env GOVERSION), one-off on a new machine) ..."
  mkdir -p "$tmp/mod"
  (
    cd "$tmp/mod"
    go mod init "fabric.invalid/$name" >/dev/null 2>&1
    go get -tool "$main@$version" "$@"
    GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-X=$VERSION_PKG=$version" \
      -o "$tmp/bin/crossplane" "$main"
  )
  cp "$tmp/mod/go.mod" "$tmp/mod/go.sum" "$tmp/"
  rm -rf "$tmp/mod"
  if [[ $name == crossplane-core ]]; then
    # Crossplane's own CRDs (XRD, Composition, Function, ...) at the same
    # tag, for `crossplane resource validate`.
    local src
    src="$(cd "$tmp" && go list -modfile=go.mod -m -f '{{.Dir}}' github.com/crossplane/crossplane/v2)/cluster/crds"
    mkdir -p "$tmp/crds"
    cp "$src"/*.yaml "$tmp/crds/"
    chmod -R u+w,go-w "$tmp/crds"
  fi
  "$tmp/bin/crossplane" version --client >/dev/null 2>&1 || "$tmp/bin/crossplane" --help >/dev/null
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  building=""
  log "built $name $version in $((SECONDS - start)) s -> $dir"
}

# A failed or interrupted build leaves nothing behind.
building=""
trap '[[ -z $building ]] || rm -rf "$building"' EXIT
mkdir -p "$CACHE"
# Arguments choose the tools (cli, core); both by default.
[[ $# -gt 0 ]] || set -- cli core
for tool in "$@"; do
  case $tool in
    cli) build_tool crossplane-cli "$CLI_VERSION" github.com/crossplane/cli/v2/cmd/crossplane ;;
    core) build_tool crossplane-core "$CORE_VERSION" github.com/crossplane/crossplane/v2/cmd/crossplane \
      "github.com/crossplane/crossplane/apis/v2@$CORE_VERSION" ;;
    *) echo "xptest/tools.sh: unknown tool $tool (cli, core)" >&2; exit 2 ;;
  esac
done
echo "XP_CLI=$CACHE/crossplane-cli-$CLI_VERSION/bin/crossplane" >&3
echo "XP_CORE=$CACHE/crossplane-core-$CORE_VERSION/bin/crossplane" >&3
echo "XP_CRDS=$CACHE/crossplane-core-$CORE_VERSION/crds" >&3

#!/usr/bin/env bash
# Builds the function package without Docker:
#   1. `fabric` in release mode, as the Dockerfile builds it;
#   2. the runtime image with umoci: the binary, the glibc libraries it
#      links (from this Debian 12 host, the base the Dockerfile's
#      distroless/cc-debian12 has), /etc/passwd with nonroot (65532) and
#      /tmp; entrypoint, user and port as in the Dockerfile;
#   3. that image as a `docker save` tarball (skopeo), embedded by
#      `crossplane xpkg build --embed-runtime-image-tarball`;
#   4. the .xpkg unpacked again (skopeo, umoci) for the image tests:
#      crates/fabric-function/tests/image.rs runs its function with chroot
#      and calls it over mTLS.
#
#   xptest/package.sh WORK_DIR     (xptest/run sets XP_CLI)
# Writes target/xpkg/function-fabric.xpkg.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$1
: "${XP_CLI:?run from xptest/run}"
out=${CARGO_TARGET_DIR:-target}/xpkg
pkg=$out/function-fabric.xpkg

cargo build --release --locked -p fabric --bin fabric
bin=${CARGO_TARGET_DIR:-target}/release/fabric

root=$work/image-root
rm -rf "$root" "$work/oci" "$work/runtime.tar"
install -D -m 0755 "$bin" "$root/usr/local/bin/fabric"
# Every library the binary links, at the path the dynamic loader finds it.
ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

umoci init --layout "$work/oci"
umoci new --image "$work/oci:runtime"
umoci insert --image "$work/oci:runtime" "$root" /
umoci config --image "$work/oci:runtime" \
  --os linux --architecture amd64 \
  --config.entrypoint /usr/local/bin/fabric --config.entrypoint function \
  --config.user 65532:65532 --config.exposedports 9443/tcp --config.workingdir /
skopeo copy --quiet "oci:$work/oci:runtime" "docker-archive:$work/runtime.tar:function-fabric-runtime:latest"

# --examples-root: its default ./examples would pull the repository's
# Machines and hosts into the package. The package carries none.
mkdir -p "$out" "$work/no-examples"
"$XP_CLI" xpkg build --package-root=package --embed-runtime-image-tarball="$work/runtime.tar" \
  --examples-root="$work/no-examples" --package-file="$pkg"
echo "package: $pkg ($(stat -c %s "$pkg") bytes)"

# Unpack what was built, for the image tests.
rm -rf "$work/xpkg-oci" "$work/image-bundle"
skopeo copy --quiet "docker-archive:$pkg" "oci:$work/xpkg-oci:pkg"
skopeo inspect --config "oci:$work/xpkg-oci:pkg" >"$work/image-config.json"
umoci unpack --image "$work/xpkg-oci:pkg" "$work/image-bundle" >/dev/null
FABRIC_IMAGE_BUNDLE=$work/image-bundle FABRIC_IMAGE_CONFIG=$work/image-config.json \
  cargo test --locked -p fabric-function --test tests image -- --test-threads=1

#!/usr/bin/env bash
# Builds the VM test's guest images, or reuses them from the cache.
#
#   vmtest/image.sh            prints the image directory on stdout
#
# The images stand in for the Fabric NixOS template (see README.md, "VM
# test"): Debian 12 from deb.debian.org with systemd as PID 1, Debian's
# nix-bin (a real nix-daemon), git, openssh-server and sudo, plus the parts
# of NixOS the bootstrap depends on (guest/nixos-stage2). Two flavours
# share one debootstrap:
#
#   debian.raw            Debian's cloud-init 22.4
#   nixos-cloud-init.raw  cloud-init 25.2 with nixpkgs' `nixos` distro and
#                         the NixOS module's cloud.cfg (networkd renderer)
#
# The cache key is a hash of this script, the guest-side files and the
# cloud-init 25.2 sources: the fabric binary under test is never baked in.
# Cache: ${FABRIC_VMTEST_CACHE:-/var/cache/fabric-vmtest}/image-<key>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
reference=${FABRIC_CLOUD_INIT_NIXOS:-$here/../../shared/reference/cloud-init-nixos}
cache=${FABRIC_VMTEST_CACHE:-/var/cache/fabric-vmtest}
mirror=${FABRIC_VMTEST_MIRROR:-http://deb.debian.org/debian}

key=$( (cat "$0"; find "$here/guest" -type f | sort | xargs cat;
        cat "$reference/cloud-init-25.2.tar.xz" "$reference/nixos.py" "$reference/cloud.cfg") \
      | sha256sum | cut -c1-16)
out=$cache/image-$key
if [ -f "$out/complete" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "vmtest/image.sh: building the image needs root" >&2; exit 2; }
for f in cloud-init-25.2.tar.xz nixos.py cloud.cfg; do
  [ -f "$reference/$f" ] || { echo "vmtest/image.sh: $reference/$f is missing (set FABRIC_CLOUD_INIT_NIXOS)" >&2; exit 2; }
done

started=$(date +%s)
say() { echo "vmtest/image.sh: $* ($(( $(date +%s) - started ))s)" >&2; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
cleanup() {
  local rc=$?
  for d in "$work/root" "$work/debian"; do
    for m in proc sys dev; do umount -l "$d/$m" 2>/dev/null || true; done
  done
  if [ "$rc" = 0 ]; then rm -rf "$work"; else echo "vmtest/image.sh: failed ($rc); build left in $work" >&2; fi
}
trap cleanup EXIT
root=$work/root

# Everything both flavours need; cloud-init's own dependencies come here so
# that the 25.2 flavour runs with exactly the Python packages Debian's
# cloud-init package depends on.
packages=(
  systemd systemd-sysv udev dbus kmod iproute2 procps util-linux hostname
  linux-image-amd64 initramfs-tools
  libnss-myhostname nix-bin nix-setup-systemd git openssh-server sudo curl ca-certificates
  python3 python3-cffi-backend python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema
  python3-netifaces python3-oauthlib python3-requests python3-serial python3-yaml
  eject fdisk gdisk isc-dhcp-client locales lsb-release
)
say "debootstrap bookworm from $mirror"
# debootstrap resolves no virtual packages (nix-bin needs one), so it lays
# down the minimal base and apt installs the rest.
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
say "debootstrap done"

# Runs apt in the root with /proc, /sys and /dev mounted and no service
# started by maintainer scripts.
apt_install() {
  local r=$1; shift
  mount --bind /proc "$r/proc"; mount --bind /sys "$r/sys"; mount --bind /dev "$r/dev"
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 0755 "$r/usr/sbin/policy-rc.d"
  local rc=0
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* && apt-get clean" \
    > "$work/apt.log" 2>&1 || rc=$?
  rm -f "$r/usr/sbin/policy-rc.d"
  rm -rf "$r"/var/lib/apt/lists/*
  umount "$r/proc" "$r/sys" "$r/dev"
  [ "$rc" = 0 ] || { tail -30 "$work/apt.log" >&2; say "apt-get install failed"; exit 1; }
}
apt_install "$root" "${packages[*]}"
say "packages installed"

chroot_run() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

# --- the common base ------------------------------------------------------
cat > "$root/etc/fstab" <<'EOF'
/dev/vda    /           ext4  rw,errors=remount-ro  0 1
# NixOS bind-mounts the store read-only (boot.readOnlyNixStore).
/nix/store  /nix/store  none  bind,ro               0 0
# The fleet share: host files, read-only to the guest.
fleet       /srv/fleet  9p    trans=virtio,version=9p2000.L,ro,cache=none,msize=262144,nofail  0 0
EOF
mkdir -p "$root/srv/fleet"
printf '9p\n9pnet_virtio\n' > "$root/etc/modules-load.d/vmtest-9p.conf"
echo "vmtest-template" > "$root/etc/hostname"
# As NixOS has them: localhost in /etc/hosts, the machine's own name from
# nss-myhostname (cloud-init sets it at boot; NixOS ignores manage_etc_hosts).
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$root/etc/nsswitch.conf"
: > "$root/etc/machine-id"
mkdir -p "$root/etc/nix"
cat > "$root/etc/nix/nix.conf" <<'EOF'
# Offline: no binary cache exists for the guest.
experimental-features = nix-command flakes
substituters =
sandbox = false
build-users-group = nixbld
EOF
# The admin user's group on NixOS.
chroot_run groupadd --system wheel
install -m 0755 "$here/guest/nixos-stage2" "$root/usr/local/sbin/nixos-stage2"
install -m 0644 "$here/guest/nixos-stage2.service" "$root/etc/systemd/system/nixos-stage2.service"
chroot_run systemctl enable nixos-stage2.service systemd-networkd.service nix-daemon.socket >/dev/null 2>&1
chroot_run systemctl enable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# The journal must survive reboots (scenario 3 reads the previous boot).
mkdir -p "$root/var/log/journal"
say "base configured"

# --- the flavours -----------------------------------------------------------
flavour_debian() {
  local r=$1
  apt_install "$r" cloud-init
  cat > "$r/etc/cloud/cloud.cfg.d/90-vmtest.cfg" <<'EOF'
# The seed ISO is the only datasource; the disk is not partitioned.
datasource_list: [NoCloud, None]
growpart: {mode: "off"}
resize_rootfs: false
# minbase generates no en_US.UTF-8, Debian's default for the locale module.
locale: C.UTF-8
EOF
}

flavour_nixos() {
  local r=$1 src
  src=$work/cloud-init-src
  mkdir -p "$src"
  tar -xJf "$reference/cloud-init-25.2.tar.xz" -C "$src" --strip-components=1
  # The reference nixos.py uses two names that cloud-init 25.2 no longer
  # has (cloudinit.log.getLogger, util.load_file): every stage fails on
  # importing it, and the hostname cannot be written. Use what 25.2's own
  # distros use (the standard logging module, util.load_text_file).
  sed -e 's/^from cloudinit import log as logging$/import logging/' \
      -e 's/util\.load_file(/util.load_text_file(/' \
    "$reference/nixos.py" > "$src/cloudinit/distros/nixos.py"
  grep -q '^import logging$' "$src/cloudinit/distros/nixos.py"
  grep -q 'util.load_text_file(' "$src/cloudinit/distros/nixos.py"
  # nixpkgs' patch registers the distro as its own OS family.
  python3 - "$src/cloudinit/distros/__init__.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
anchor = "OSFAMILIES = {"
assert anchor in s, "OSFAMILIES not found"
s = s.replace(anchor, anchor + '\n    "nixos": ["nixos"],', 1)
open(p, "w").write(s)
PY
  local site=$r/usr/lib/python3/dist-packages
  cp -a "$src/cloudinit" "$site/cloudinit"
  mkdir -p "$r/etc/cloud/cloud.cfg.d" "$r/etc/cloud/templates"
  cp -a "$src/templates/." "$r/etc/cloud/templates/"
  install -m 0644 "$reference/cloud.cfg" "$r/etc/cloud/cloud.cfg"
  # The package's own logging configuration, as nixpkgs installs it.
  install -m 0644 "$src/config/cloud.cfg.d/05_logging.cfg" "$r/etc/cloud/cloud.cfg.d/05_logging.cfg"
  cat > "$r/usr/bin/cloud-init" <<'EOF'
#!/usr/bin/python3
import sys
from cloudinit.cmd.main import main
sys.exit(main())
EOF
  chmod 0755 "$r/usr/bin/cloud-init"
  # The four stages as nixpkgs' services.cloud-init defines them.
  install -m 0644 "$here/guest/nixos-cloud-init/"*.service "$here/guest/nixos-cloud-init/"*.target "$r/etc/systemd/system/"
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    systemctl enable cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service >/dev/null 2>&1
  python3 -c "import compileall,sys; compileall.compile_dir(sys.argv[1], quiet=1)" "$site/cloudinit" >/dev/null || true
}

# NixOS's /etc/systemd/system is a link into the (read-only) store. Only
# runtime units in /run/systemd/system can be added once the guest runs.
store_systemd_system() {
  local r=$1 path
  mount --bind /proc "$r/proc"
  mv "$r/etc/systemd/system" "$r/etc/systemd/system.build"
  path=$(chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    nix-store --add /etc/systemd/system.build 2>"$work/store-add.log") \
    || { umount "$r/proc"; cat "$work/store-add.log" >&2; exit 1; }
  umount "$r/proc"
  rm -rf "$r/etc/systemd/system.build"
  ln -s "$path" "$r/etc/systemd/system"
  ln -s "$path" "$r/nix/var/nix/gcroots/etc-systemd-system"
}

make_image() {
  local r=$1 image=$2
  store_systemd_system "$r"
  rm -f "$r/etc/resolv.conf"
  truncate -s 4G "$image.tmp"
  mkfs.ext4 -q -F -L vmtest-root -d "$r" "$image.tmp"
  mv "$image.tmp" "$image"
}

mkdir -p "$work/out"
cp -L "$root/vmlinuz" "$work/out/vmlinuz"
cp -L "$root/initrd.img" "$work/out/initrd.img"

say "flavour debian"
cp -a "$root" "$work/debian"
flavour_debian "$work/debian"
make_image "$work/debian" "$work/out/debian.raw"
rm -rf "$work/debian"

say "flavour nixos-cloud-init"
flavour_nixos "$root"
make_image "$root" "$work/out/nixos-cloud-init.raw"

{
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "build_seconds=$(( $(date +%s) - started ))"
  echo "kernel=$(basename "$(readlink "$root/vmlinuz")")"
} > "$work/out/complete"
rm -rf "$out"
mv "$work/out" "$out"
say "image ready in $out"
echo "$out"

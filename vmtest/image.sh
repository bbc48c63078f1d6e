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
#   nixos-cloud-init.raw  Debian trixie's cloud-init 25.1.4 (the closest
#                         Debian has to NixOS 25.11's 25.2), the project's
#                         own `nixos` distro (guest/nixos-distro) and the
#                         NixOS module's cloud.cfg (networkd renderer)
#
# The cache key is a hash of this script and every file under guest/ (the
# distro, cloud.cfg, units), which between them name the suites and the
# pinned cloud-init version: the fabric binary under test is never baked in.
# Cache: ${FABRIC_VMTEST_CACHE:-/var/cache/fabric-vmtest}/image-<key>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${FABRIC_VMTEST_CACHE:-/var/cache/fabric-vmtest}
mirror=${FABRIC_VMTEST_MIRROR:-http://deb.debian.org/debian}
# The nixos-cloud-init flavour's cloud-init: this suite, this upstream
# version (any Debian revision of it, so that a stable update does not break
# the build; the revision installed is recorded in the image's `complete`).
cloud_init_suite=trixie
cloud_init_version=25.1.4

key=$( (cat "$0"; find "$here/guest" -type f | LC_ALL=C sort | while read -r f; do echo "${f#"$here"/}"; cat "$f"; done) \
      | sha256sum | cut -c1-16)
out=$cache/image-$key
if [ -f "$out/complete" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "vmtest/image.sh: building the image needs root" >&2; exit 2; }
# Stdout carries the image directory and nothing else (vmtest/run reads it):
# whatever the build prints goes to stderr. A check's one line on stdout
# once made a freshly built image's path unreadable, and every guest failed.
exec 3>&1 1>&2

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

# Everything both flavours need, cloud-init's dependencies included (each
# flavour's apt run adds what its cloud-init package needs beyond these).
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
# started by maintainer scripts: `apt_install ROOT PACKAGES...`, or
# `apt_install ROOT` with APT_BEFORE_INSTALL, a shell command run in the
# root once the package lists are fresh (a check of what apt would do).
apt_install() {
  local r=$1; shift
  mount --bind /proc "$r/proc"; mount --bind /sys "$r/sys"; mount --bind /dev "$r/dev"
  cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod 0755 "$r/usr/sbin/policy-rc.d"
  local rc=0
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C \
    sh -c "apt-get update -qq && ${APT_BEFORE_INSTALL:-true} && apt-get install -y -qq --no-install-recommends $* && apt-get clean" \
    > "$work/apt.log" 2>&1 || rc=$?
  rm -f "$r/usr/sbin/policy-rc.d"
  rm -rf "$r"/var/lib/apt/lists/*
  umount "$r/proc" "$r/sys" "$r/dev"
  [ "$rc" = 0 ] || { tail -30 "$work/apt.log" >&2; say "apt-get install failed"; exit 1; }
}
apt_install "$root" "${packages[*]}"
say "packages installed"

chroot_in() { local r=$1; shift; chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
chroot_run() { chroot_in "$root" "$@"; }

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
# Debian's housekeeping has no counterpart in the NixOS template and costs
# every TCG boot CPU that the guests share (e2scrub_reap alone took 5-18 s).
chroot_run systemctl mask e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer fstrim.timer >/dev/null 2>&1
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
  local r=$1 distro=nixos
  # cloud-init alone comes from the newer suite: every other package,
  # cloud-init's dependencies included, stays on bookworm.
  echo "deb $mirror $cloud_init_suite main" > "$r/etc/apt/sources.list.d/vmtest-cloud-init.list"
  cat > "$r/etc/apt/preferences.d/vmtest-cloud-init" <<EOF
Package: *
Pin: release n=$cloud_init_suite
Pin-Priority: 1

Package: cloud-init
Pin: version $cloud_init_version-*
Pin-Priority: 990
EOF
  # apt's plan names each package's release: everything but cloud-init
  # must come from bookworm (Debian 12), or the build stops here.
  local plan="apt-get install -s --no-install-recommends cloud-init > /tmp/plan && grep '^Inst ' /tmp/plan >&2"
  plan="$plan && ! grep '^Inst ' /tmp/plan | grep -v '^Inst cloud-init ' | grep -Ev ' Debian(-Security)?:12'"
  APT_BEFORE_INSTALL=$plan apt_install "$r" cloud-init
  rm -f "$r/tmp/plan"
  local installed
  installed=$(chroot_in "$r" dpkg-query -W -f '${Version}' cloud-init)
  case "$installed" in
    "$cloud_init_version"-*) ;;
    *) say "cloud-init $installed installed, expected $cloud_init_version-* from $cloud_init_suite"; exit 1 ;;
  esac
  echo "$installed" > "$work/cloud-init-version"

  local site=$r/usr/lib/python3/dist-packages/cloudinit/distros
  install -m 0644 "$here/guest/nixos-distro/distro.py" "$site/$distro.py"
  # As nixpkgs' patch does: the distro is an OS family of its own.
  python3 - "$site/__init__.py" "$distro" <<'PY'
import sys
path, distro = sys.argv[1], sys.argv[2]
text = open(path).read()
anchor = "OSFAMILIES = {"
if text.count(anchor) != 1:
    sys.exit(f"{path}: expected one '{anchor}', found {text.count(anchor)}: cloud-init's layout changed")
text = text.replace(anchor, f'{anchor}\n    "{distro}": ["{distro}"],', 1)
open(path, "w").write(text)
PY
  # The distro's behaviour, checked against the cloud-init installed.
  install -m 0644 "$here/guest/nixos-distro/check.py" "$r/tmp/vmtest-distro-check.py"
  chroot_in "$r" python3 -B /tmp/vmtest-distro-check.py \
    || { say "the $distro distro does not behave as nixpkgs' does (guest/nixos-distro/check.py)"; exit 1; }
  rm -f "$r/tmp/vmtest-distro-check.py"

  # NixOS has none of Debian's units, generator or configuration: its
  # cloud.cfg, the package's own logging configuration, and the four stages
  # of services.cloud-init.
  rm -f "$r"/usr/lib/systemd/system/cloud-* "$r"/usr/lib/systemd/system-generators/cloud-init-generator
  rm -rf "$r"/usr/lib/systemd/system/sshd-keygen@.service.d
  find "$r/etc/systemd/system" -lname '*/cloud-*' -delete
  find "$r/etc/systemd/system" -type d -name 'cloud-*.wants' -empty -delete
  find "$r/etc/cloud/cloud.cfg.d" -type f ! -name 05_logging.cfg -delete
  install -m 0644 "$here/guest/nixos-cloud-init/cloud.cfg" "$r/etc/cloud/cloud.cfg"
  install -m 0644 "$here/guest/nixos-cloud-init/"*.service "$here/guest/nixos-cloud-init/"*.target "$r/etc/systemd/system/"
  chroot_in "$r" systemctl enable cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service >/dev/null 2>&1
  chroot_in "$r" python3 -m compileall -q "/usr/lib/python3/dist-packages/cloudinit/distros/$distro.py" >/dev/null
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
  echo "nixos_cloud_init=$cloud_init_suite $(cat "$work/cloud-init-version")"
} > "$work/out/complete"
rm -rf "$out"
mv "$work/out" "$out"
say "image ready in $out"
# Each recipe change leaves a 2 GB image behind: keep this one and the two
# newest others (another checkout may be testing an older recipe).
{ ls -1dt "$cache"/image-* | grep -vxF "$out" || true; } | tail -n +3 | while read -r old; do rm -rf "$old"; done
echo "$out" >&3

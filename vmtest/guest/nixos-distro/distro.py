# The `nixos` distro for cloud-init, as the VM test's NixOS-flavoured guest
# registers it (image.sh installs this file as cloudinit/distros/nixos.py).
#
# Written for this project from the behaviour of nixpkgs' patch
# (pkgs/tools/virtualization/cloud-init/0001-add-nixos-support.patch), which
# NixOS 25.11 applies to cloud-init 25.2; see README.md, "VM test". It is
# not a copy of that patch: it targets the cloud-init API of the Debian
# package the guest installs.
#
# NixOS configures the system declaratively, so the distro does as little
# as possible: it writes the hostname, and leaves the network to
# cloud-init's renderer (networkd, chosen in cloud.cfg). Packages and the
# locale are the NixOS configuration's job, so asking cloud-init for them
# is an error rather than a silent no-op.

import logging

from cloudinit import atomic_helper, distros, util
from cloudinit.distros.parsers.hostname import HostnameConf
from cloudinit.net import dhcp

LOG = logging.getLogger(__name__)


class Distro(distros.Distro):
    def __init__(self, name, cfg, paths):
        super().__init__(name, cfg, paths)
        self.osfamily = "nixos"
        # nixpkgs' order: the first of these found on the machine is used.
        self.dhcp_client_priority = [dhcp.Udhcpc, dhcp.IscDhclient, dhcp.Dhcpcd]

    def _select_hostname(self, hostname, fqdn):
        # The short name, unless there is none: the FQDN only ever reaches
        # update_hostname, never the hostname file.
        if not hostname:
            return fqdn
        return hostname

    def _read_hostname_conf(self, filename):
        conf = HostnameConf(util.load_text_file(filename))
        conf.parse()
        return conf

    def _read_hostname(self, filename, default=None):
        try:
            hostname = self._read_hostname_conf(filename).hostname
        except IOError:
            hostname = None
        return hostname or default

    def _read_system_hostname(self):
        return (
            self.hostname_conf_fn,
            self._read_hostname(self.hostname_conf_fn),
        )

    def _write_hostname(self, hostname, filename):
        try:
            conf = self._read_hostname_conf(filename)
        except IOError:
            if not util.get_cfg_option_bool(
                self._cfg, "create_hostname_file", True
            ):
                LOG.info(
                    "create_hostname_file is False; hostname file not created"
                )
                return
            conf = HostnameConf("")
        conf.set_hostname(hostname)
        # On NixOS /etc/hostname is a link into the read-only store: a
        # rename replaces the link, where writing through it would fail.
        atomic_helper.write_file(filename, str(conf), mode=0o644, omode="w")

    def apply_locale(self, locale, out_fn=None):
        raise NotImplementedError(
            "nixos: the locale is set by the NixOS configuration "
            "(i18n.defaultLocale), not by cloud-init"
        )

    def install_packages(self, pkglist):
        raise NotImplementedError(
            "nixos: packages come from the NixOS configuration "
            "(environment.systemPackages), not from cloud-init"
        )

    def package_command(self, command, args=None, pkgs=None):
        pass

    def update_package_sources(self, *, force=False):
        pass

    def set_timezone(self, tz):
        pass

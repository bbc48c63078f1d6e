# Run by image.sh inside the nixos-cloud-init guest's root, against the
# cloud-init the guest runs: the `nixos` distro behaves as nixpkgs' does
# (README.md, "VM test"). Exits non-zero naming the first difference.
import os
import sys
import tempfile

from cloudinit import distros, helpers
from cloudinit.net import dhcp


def fail(what):
    sys.exit(f"nixos distro: {what}")


cls = distros.fetch("nixos")
if distros.OSFAMILIES.get("nixos") != ["nixos"]:
    fail(f"OSFAMILIES has no nixos family: {distros.OSFAMILIES}")
with tempfile.TemporaryDirectory() as tmp:
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
    d = cls("nixos", {}, paths)
    if d.osfamily != "nixos" or not isinstance(d, distros.Distro):
        fail(f"osfamily is {d.osfamily!r}")
    if distros.Distro.expand_osfamily(["nixos"]) != ["nixos"]:
        fail("the nixos family does not expand to the nixos distro")

    # Short name preferred, even when asked for the FQDN; the FQDN only
    # when there is no short name.
    if d._select_hostname("web1", "web1.example.org") != "web1":
        fail("the FQDN was preferred to the short hostname")
    d2 = cls("nixos", {"prefer_fqdn_over_hostname": True}, paths)
    if d2._select_hostname("web1", "web1.example.org") != "web1":
        fail("prefer_fqdn_over_hostname made the FQDN win")
    if d._select_hostname(None, "web1.example.org") != "web1.example.org":
        fail("no hostname and the FQDN was not used")

    # The hostname file: written atomically (a link is replaced, not
    # written through, as /etc/hostname into the store is on NixOS), with
    # the parser keeping comments, and read back the same way.
    target = os.path.join(tmp, "store-hostname")
    with open(target, "w") as f:
        f.write("# managed\ntemplate\n")
    os.chmod(target, 0o444)
    link = os.path.join(tmp, "hostname")
    os.symlink(target, link)
    d._write_hostname("web1", link)
    if os.path.islink(link):
        fail("the hostname file was written through its link, not replaced")
    text = open(link).read()
    if text != "# managed\nweb1\n":
        fail(f"hostname file is {text!r}")
    if open(target).read() != "# managed\ntemplate\n":
        fail("the link's target was changed")
    if d._read_hostname(link) != "web1":
        fail("the hostname does not read back")
    if d._read_hostname(os.path.join(tmp, "absent"), "dflt") != "dflt":
        fail("a missing hostname file does not give the default")
    d.hostname_conf_fn = link
    if d._read_system_hostname() != (link, "web1"):
        fail(f"system hostname reads {d._read_system_hostname()}")

    # Packages and locale are the NixOS configuration's job.
    for name, call in [("install_packages", lambda: d.install_packages(["vim"])),
                       ("apply_locale", lambda: d.apply_locale("de_DE.UTF-8"))]:
        try:
            call()
        except NotImplementedError:
            pass
        else:
            fail(f"{name} did not raise")
    d.package_command("install", pkgs=["vim"])
    d.set_timezone("Europe/Berlin")
    d.update_package_sources()
    d.update_package_sources(force=True)

    if d.dhcp_client_priority != [dhcp.Udhcpc, dhcp.IscDhclient, dhcp.Dhcpcd]:
        fail(f"DHCP clients in order {d.dhcp_client_priority}")
print("nixos distro: behaves as nixpkgs' does")

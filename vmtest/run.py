#!/usr/bin/env python3
"""The VM test: Machine YAML -> `fabric seed` -> QEMU guest -> converged.

Run through `vmtest/run` (which installs prerequisites and builds or reuses
the image); see README.md, "VM test". Every scenario of issue 8 runs on
each flavour; four guests run at once by default (FABRIC_VMTEST_PARALLEL).

Channels: the guest is driven over SSH as the Machine's admin user with the
key the Machine declares (QEMU's user network forwards one loopback port of
the host to the guest's port 22; with restrict=on the guest can reach
nothing outside). Results are read from the guest's own files, journal and
`fabric status --json`, never inferred from timings. On a failure the
serial console tail and the journal of the units involved are printed.

Fleets: a bare repository on the guest's read-only 9p share (`git+file`),
except the `late` guest's, which is private: a real sshd on the host's
loopback (Forge) serves it to the Machine's deploy key alone, and the guest
reaches it through a guestfwd address (guestfwd-relay.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false"

# The agent's settings for the test (a NixOS user sets them the same way,
# through the module): a short interval so that a commit is picked up
# quickly, a short watchdog so that three periods pass in under a minute.
AGENT_INTERVAL_S = 10
AGENT_WATCHDOG_S = 10
# How long an agent deployment (evaluation, build, switch) may take. Under
# TCG on a host shared with other builds one takes minutes; the waits end as
# soon as the deployment is recorded, so a generous bound costs nothing.
DEPLOY_TIMEOUT_S = 900
# How long a boot (to SSH, to the bootstrap marker) may take: 5 minutes on
# an idle 2-core host, 15 and more with six TCG guests beside other builds.
BOOT_TIMEOUT_S = 3600
HEALTH_CHECK = "test ! -e /run/current-system/unhealthy"
METRICS = "127.0.0.1:9750"

ADMIN = "ops"
IFACE = "lan0"
GUEST_IP = "10.0.2.15"
GUEST_IP6 = "fd00:10::15"

# Scenario 10's private forge as the guest sees it: a guestfwd address of
# QEMU's user network (not the slirp host 10.0.2.2: see guestfwd-relay.py)
# on a port other than 22, so that the pinned host key takes known_hosts'
# `[host]:port` form.
FORGE_ADDR = "10.0.2.4"
FORGE_PORT = 2222
FORGE_REPO = "/fleet.git"
CREDENTIALS_SECRET = "fleet-deploy-key"
# The contract's paths on the machine (crates/fabric-converge/src/layout.rs).
CREDENTIALS_DIR = "/etc/fabric/credentials"
SSHD = "/usr/sbin/sshd"

T0 = time.monotonic()
PRINT_LOCK = threading.Lock()
GUESTS: list = []


def say(msg: str) -> None:
    with PRINT_LOCK:
        print(f"[{time.monotonic() - T0:6.0f}s] {msg}", flush=True)


class Failed(Exception):
    """An assertion about the guest did not hold."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def run(argv, **kw) -> str:
    kw.setdefault("check", True)
    out = subprocess.run(argv, capture_output=True, text=True, **kw)
    return out.stdout


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="fabric-vmtest",
        GIT_AUTHOR_EMAIL="vmtest@fabric.invalid",
        GIT_COMMITTER_NAME="fabric-vmtest",
        GIT_COMMITTER_EMAIL="vmtest@fabric.invalid",
    )
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "commit.gpgsign=false", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {args}: {out.stderr}")
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- what every guest shares ---------------------------------------------------


class Run:
    """Host-side material of one test run."""

    def __init__(self, work: Path, image: Path, fabric: Path):
        self.work = work
        self.image = image
        self.key = work / "id_ed25519"
        self.ssh_dir = Path(tempfile.mkdtemp(prefix="fvs-", dir="/tmp"))
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmtest@host", "-f", str(self.key)])
        self.pubkey = (work / "id_ed25519.pub").read_text().strip()
        # The package dir `fabric/bin/fabric`: `nix-store --add` registers it
        # under the same content-addressed path on the host and in the guest.
        self.package = work / "fabric-package" / "fabric"
        (self.package / "bin").mkdir(parents=True)
        run(["strip", "--strip-debug", "-o", str(self.package / "bin" / "fabric"), str(fabric)])
        os.chmod(self.package / "bin" / "fabric", 0o755)
        env = dict(os.environ, NIX_CONFIG=NIX_CONFIG)
        self.fabric_store_path = run(["nix-store", "--add", str(self.package)], env=env).strip()
        self.agent_unit = render_agent_unit(self.fabric_store_path)
        # The template's system generation, with fabric in sw/bin and
        # without it (guest/nixos-stage2 registers it at first boot).
        self.templates = {True: self.template(env, True), False: self.template(env, False)}
        (work / "fabric-agent.service").write_text(self.agent_unit)

    def template(self, env: dict, with_fabric: bool) -> str:
        """The template's system: a store path, as the image builder makes it.

        No nixpkgs exists here to build a real toplevel; this one has what
        bootstrap and the agent use: sw/bin (bash, and fabric when
        installed) and a switch-to-configuration that only makes it current.
        """
        sys_dir = self.work / ("template-fabric" if with_fabric else "template-bare") / "nixos-system-template"
        (sys_dir / "bin").mkdir(parents=True)
        (sys_dir / "sw" / "bin").mkdir(parents=True)
        (sys_dir / "sw" / "bin" / "bash").symlink_to("/bin/bash")
        if with_fabric:
            (sys_dir / "sw" / "bin" / "fabric").symlink_to(f"{self.fabric_store_path}/bin/fabric")
        switch = sys_dir / "bin" / "switch-to-configuration"
        switch.write_text(TEMPLATE_SWITCH)
        switch.chmod(0o755)
        return run(["nix-store", "--add", str(sys_dir)], env=env).strip()

    def share_template(self, share: Path, with_fabric: bool) -> None:
        """Puts the template's store paths and their registration on a share."""
        system = self.templates[with_fabric]
        paths = [system] + ([self.fabric_store_path] if with_fabric else [])
        out = share / "nixos-template"
        (out / "store").mkdir(parents=True)
        run(["cp", "-a", *paths, str(out / "store")])
        (out / "registration").write_text(run(["nix-store", "--dump-db", *paths]))
        (out / "system").write_text(system + "\n")


TEMPLATE_SWITCH = """#!/bin/sh
# The template generation: activating it only makes it current.
self=$(dirname "$(dirname "$(readlink -f "$0")")")
mkdir -p /var/lib/vmtest
echo "template $*" >> /var/lib/vmtest/switch.log
case "${1-}" in switch|test) ln -sfn "$self" /run/current-system ;; esac
"""


def render_agent_unit(fabric_store_path: str, credentials: dict[str, str] | None = None) -> str:
    """nix/module.nix's fabric-agent, evaluated by vmtest/agent-unit.nix, as a
    unit file; `credentials` sets services.fabric.credentials.* (sshKeyFile,
    knownHostsFile)."""
    env = dict(os.environ, NIX_CONFIG=NIX_CONFIG)
    argv = [
        "nix-instantiate", "--readonly-mode", "--eval", "--strict", "--json",
        str(HERE / "agent-unit.nix"),
        "--argstr", "fabricPackage", fabric_store_path,
        "--argstr", "interval", f"{AGENT_INTERVAL_S}s",
        "--argstr", "watchdogSec", f"{AGENT_WATCHDOG_S}s",
        "--argstr", "healthCheck", HEALTH_CHECK,
    ]
    for k, v in sorted((credentials or {}).items()):
        argv += ["--argstr", k, v]
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise Failed(f"vmtest/agent-unit.nix does not evaluate: {p.stderr.strip()}")
    out = p.stdout
    unit = json.loads(out)

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return " ".join(value(x) for x in v)
        return str(v)

    lines = ["# nix/module.nix's systemd.services.fabric-agent, rendered by vmtest/run.py", "[Unit]"]
    lines.append(f"Description={unit['description']}")
    for key, name in (("wants", "Wants"), ("after", "After"), ("requires", "Requires")):
        if unit.get(key):
            lines.append(f"{name}={value(unit[key])}")
    for k, v in sorted(unit.get("unitConfig", {}).items()):
        lines.append(f"{k}={value(v)}")
    lines.append("")
    lines.append("[Service]")
    # The module's `path` names nixpkgs packages, which the guest lacks; its
    # Debian counterparts stand in. /run/current-system/sw is kept as is.
    path = [p + "/bin" for p in unit.get("path", []) if not p.startswith("/nix/store/")]
    path += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    lines.append(f"Environment=\"PATH={':'.join(path)}\"")
    for k, v in sorted(unit.get("environment", {}).items()):
        lines.append(f"Environment=\"{k}={v}\"")
    for k, v in sorted(unit["serviceConfig"].items()):
        lines.append(f"{k}={value(v)}")
    lines.append("")
    return "\n".join(lines)


# --- one guest --------------------------------------------------------------------


class Fleet:
    """The fleet repository: a work tree on the host, published as a bare
    repository on the guest's read-only share."""

    def __init__(self, dir: Path, bare: Path, host: str, fabric: str, server: "Forge | None" = None):
        self.dir = dir
        self.bare = bare
        self.host = host
        self.fabric = fabric
        # When set, the guest fetches over SSH from this forge, and the
        # bare repository lives outside the guest's share.
        self.server = server
        dir.mkdir(parents=True)
        git(dir, "init", "-q", "-b", "main")
        (dir / "build.sh").write_text((HERE / "fleet" / "build.sh").read_text())
        (dir / "flake.lock").write_text('{"nodes":{"root":{}},"root":"root","version":7}\n')
        template = (HERE / "fleet" / "flake.nix.in").read_text()
        (dir / "flake.nix").write_text(template.replace("@HOST@", host).replace("@FABRIC@", fabric))

    def commit(self, label: str, switch_code=0, fail_build=False, unhealthy=False, build_seconds=0) -> str:
        (self.dir / "generation.nix").write_text(
            textwrap.dedent(
                f"""\
                {{
                  label = "{label}";
                  switchCode = {switch_code};
                  failBuild = {str(fail_build).lower()};
                  unhealthy = {str(unhealthy).lower()};
                  buildSeconds = {build_seconds};
                }}
                """
            )
        )
        git(self.dir, "add", "-A")
        git(self.dir, "commit", "-q", "-m", label)
        return git(self.dir, "rev-parse", "HEAD")

    def publish(self) -> None:
        """Makes the bare repository on the share hold main."""
        if not self.bare.exists():
            tmp = self.bare.with_name(self.bare.name + ".tmp")
            git(self.dir, "clone", "-q", "--bare", str(self.dir), str(tmp))
            tmp.rename(self.bare)
        else:
            git(self.dir, "push", "-q", "--force", str(self.bare), "main:main")
        if self.server:
            # The forge comes up with the repository: until then the guest's
            # connections are closed (scenario 8 waits through that).
            self.server.start()

    def flake_ref(self) -> str:
        if self.server:
            return f"git+ssh://{self.server.user}@{FORGE_ADDR}:{FORGE_PORT}{FORGE_REPO}?ref=main#{self.host}"
        return f"git+file:///srv/fleet/{self.bare.name}?ref=main#{self.host}"


class Forge:
    """A private forge on the host: a real sshd that serves one fleet
    repository, as GitHub or Gitea serve a repository to a deploy key.

    It listens on 127.0.0.1 only, on a free port; the guest reaches it
    through QEMU's guestfwd (guestfwd-relay.py). Its config, host key,
    authorized_keys and log live in a 0700 directory of the run. It takes
    public keys only, for one user (the one running the test; sshd can
    authenticate no other when not root), and only the deploy keys in
    `authorized_keys`, each with `restrict`. Whatever the client asks,
    ForceCommand runs `git-upload-pack` of the one repository, or refuses:
    a deploy key reads the fleet and does nothing else.
    """

    def __init__(self, dir: Path, repo: Path):
        self.dir = dir
        self.repo = repo
        dir.mkdir(mode=0o700, parents=True)
        os.chmod(dir, 0o700)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = free_port()
        self.host_key = dir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmtest forge", "-f", str(self.host_key)])
        host_pub = (dir / "ssh_host_ed25519_key.pub").read_text().split()
        # The line the Machine's Secret pins: the forge as the guest sees it.
        self.known_hosts = f"[{FORGE_ADDR}]:{FORGE_PORT} {host_pub[0]} {host_pub[1]}\n"
        (dir / "known_hosts.local").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.deploy_key = self.new_key("deploy")
        self.authorize([self.deploy_key])
        upload_pack = shutil.which("git-upload-pack") or "/usr/bin/git-upload-pack"
        serve = dir / "serve-fleet"
        serve.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            # sshd's ForceCommand: git-upload-pack of the fleet repository, nothing else.
            case "$SSH_ORIGINAL_COMMAND" in
              "git-upload-pack '{FORGE_REPO}'"|"git-upload-pack {FORGE_REPO}")
                exec {upload_pack} --strict {shquote(str(repo))} ;;
            esac
            echo "vmtest forge: refused: $SSH_ORIGINAL_COMMAND" >&2
            exit 1
            """))
        os.chmod(serve, 0o700)
        self.log = dir / "sshd.log"
        self.config = dir / "sshd_config"
        self.config.write_text(textwrap.dedent(f"""\
            # vmtest/run.py's forge: loopback only, one user, public keys only.
            ListenAddress 127.0.0.1:{self.port}
            HostKey {self.host_key}
            PidFile {dir / "sshd.pid"}
            AllowUsers {self.user}
            AuthorizedKeysFile {dir / "authorized_keys"}
            AuthorizedKeysCommand none
            AuthenticationMethods publickey
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            HostbasedAuthentication no
            PermitRootLogin prohibit-password
            UsePAM no
            ForceCommand {serve}
            DisableForwarding yes
            PermitTTY no
            PermitUserEnvironment no
            PrintMotd no
            PrintLastLog no
            # The key files sit in this 0700 directory under /tmp; StrictModes
            # would refuse them for /tmp's mode 1777 above it.
            StrictModes no
            # VERBOSE logs each accepted key's fingerprint: the test reads
            # which key every fetch used.
            LogLevel VERBOSE
            """))
        self.proc: subprocess.Popen | None = None
        self.checked = 0

    def new_key(self, name: str) -> Path:
        key = self.dir / f"{name}_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vmtest {name} key", "-f", str(key)])
        return key

    @staticmethod
    def fingerprint(key: Path) -> str:
        return run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"]).split()[1]

    def authorize(self, keys: list[Path]) -> None:
        """Makes exactly these keys the forge's deploy keys (sshd reads the
        file at each login, so this also revokes the others at once)."""
        text = "".join(f"restrict {Path(f'{k}.pub').read_text().strip()}\n" for k in keys)
        tmp = self.dir / "authorized_keys.tmp"
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        tmp.rename(self.dir / "authorized_keys")

    def start(self) -> None:
        if self.proc:
            return
        check(os.path.isabs(SSHD) and os.access(SSHD, os.X_OK), f"{SSHD} is missing (Debian: openssh-server)")
        if os.getuid() == 0:
            # sshd's privilege separation directory, which systemd's ssh.service
            # would create; sshd refuses to start as root without it.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        t = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        check(t.returncode == 0, f"the forge's sshd_config is refused: {t.stderr.strip()}")
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until = time.monotonic() + 30
        while True:
            check(self.proc.poll() is None, f"the forge's sshd exited with {self.proc.returncode}: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                    if c.recv(8).startswith(b"SSH-2.0"):
                        break
            except OSError:
                pass
            check(time.monotonic() < until, f"the forge's sshd does not answer on 127.0.0.1:{self.port}")
            time.sleep(0.2)
        # The fixture itself: the deploy key reads the repository, and
        # another key (the admin's) is refused.
        head = self.ls_remote(self.deploy_key)
        check(head.returncode == 0 and "refs/heads/main" in head.stdout,
              f"the forge does not serve the fleet to the deploy key: {head.stderr}")
        stranger = self.ls_remote(self.new_key("stranger"))
        check(stranger.returncode != 0 and "Permission denied" in stranger.stderr,
              f"the forge let a key it does not know read the fleet: {stranger}")
        # Logins from here on are the guest's.
        self.checked = len(self.accepted())

    def ls_remote(self, key: Path) -> subprocess.CompletedProcess:
        ssh = (f"ssh -i {shquote(str(key))} -o IdentitiesOnly=yes -o BatchMode=yes "
               f"-o UserKnownHostsFile={shquote(str(self.dir / 'known_hosts.local'))} -o StrictHostKeyChecking=yes")
        return subprocess.run(["git", "ls-remote", f"ssh://{self.user}@127.0.0.1:{self.port}{FORGE_REPO}", "main"],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, GIT_SSH_COMMAND=ssh))

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def accepted(self) -> list[str]:
        """The fingerprints of the keys the forge accepted from the guest
        (every login after start()'s own check), in order."""
        return re.findall(r"Accepted publickey for \S+ from 127\.0\.0\.1 port \d+ ssh2: \S+ (SHA256:\S+)",
                          self.log_text())[self.checked:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def secret_yaml(self, namespace: str) -> str:
        """The Machine's credentials Secret, as `kubectl create secret` writes it."""
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()
        return textwrap.dedent(f"""\
            apiVersion: v1
            kind: Secret
            metadata:
              name: {CREDENTIALS_SECRET}
              namespace: {namespace}
            type: kubernetes.io/ssh-auth
            data:
              ssh-privatekey: {b64(self.deploy_key.read_text())}
              known_hosts: {b64(self.known_hosts)}
            """)


class Guest:
    def __init__(self, r: Run, flavour: str, name: str, mac: str, fabric_installed=True, private_fleet=False):
        self.r = r
        self.flavour = flavour
        self.name = name
        self.mac = mac
        self.fabric_installed = fabric_installed
        self.dir = r.work / f"{flavour}-{name}"
        self.share = self.dir / "share"
        self.share.mkdir(parents=True)
        r.share_template(self.share, fabric_installed)
        self.console = self.dir / "console.log"
        self.port = free_port()
        self.hostname = f"{name}"
        # A private fleet is served by the forge alone: its bare repository
        # is not on the share, so the guest has no other way to it.
        self.forge = Forge(self.dir / "forge", self.dir / "forge-repo" / "fleet.git") if private_fleet else None
        bare = self.forge.repo if self.forge else self.share / "fleet.git"
        if self.forge:
            bare.parent.mkdir()
        self.fleet = Fleet(self.dir / "fleet-work", bare, self.hostname,
                           r.fabric_store_path if fabric_installed else "", self.forge)
        self.qemu: subprocess.Popen | None = None
        self.started_at = 0.0
        self.units = ["nixos-stage2.service", "cloud-init-local.service", "cloud-init.service",
                      "cloud-config.service", "cloud-final.service", "fabric-bootstrap.service"]

    # Machine and seed

    def machine_yaml(self, fabric_flake: str | None = None) -> Path:
        y = textwrap.dedent(
            f"""\
            apiVersion: infra.kubelize.io/v1alpha1
            kind: Machine
            metadata:
              name: {self.name}
              namespace: vmtest
              uid: 6f1c0a52-{self.flavour[:4].encode().hex()}-4000-8000-{self.name.encode().hex()[:12].ljust(12, "0")}
            spec:
              hostname: {self.hostname}
              domain: vmtest.internal
              image: nixos-template
              class: small
              network:
                dhcp: false
                interface: {IFACE}
                macAddress: "{self.mac}"
                ip: {GUEST_IP}
                cidr: 24
                gateway: 10.0.2.2
                dns: [10.0.2.3]
                ipv6: {{address: "{GUEST_IP6}", prefix: 64, gateway: "fd00:10::2"}}
              nix:
                flakeRef: "{self.fleet.flake_ref()}"
                @CREDENTIALS@
              bootstrap:
                adminUser: {ADMIN}
                sshAuthorizedKeys:
                  - {self.r.pubkey}
            """
        )
        credentials = f"credentialsSecretRef: {{name: {CREDENTIALS_SECRET}}}" if self.forge else ""
        y = "\n".join(l for l in y.replace("@CREDENTIALS@", credentials).split("\n") if l.strip() or not l)
        path = self.dir / "machine.yaml"
        path.write_text(y)
        seed_args = [str(self.r.work / "fabric"), "seed", str(path), "--iso", str(self.dir / "seed.iso")]
        if self.forge:
            secret = self.dir / "secret.yaml"
            secret.write_text(self.forge.secret_yaml("vmtest"))
            os.chmod(secret, 0o600)
            seed_args += ["--secret", str(secret)]
        if fabric_flake:
            seed_args += ["--fabric-flake", fabric_flake]
        out = subprocess.run(seed_args, capture_output=True, text=True)
        if out.returncode != 0:
            raise Failed(f"fabric seed failed: {out.stderr}")
        return path

    # QEMU

    def boot(self) -> None:
        image = self.r.image
        overlay = self.dir / "disk.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
             str(image / f"{self.flavour}.raw"), str(overlay)])
        # no_timer_check: on a loaded host a TCG guest's kernel can miss the
        # IO-APIC timer test's deadline and panic ("IO-APIC + timer doesn't
        # work!") before userspace; the check proves nothing about Fabric.
        append = ("root=/dev/vda rw console=ttyS0,115200 net.ifnames=1 no_timer_check "
                  "systemd.journald.forward_to_console=0")
        if self.fabric_installed:
            append += " vmtest.fabric=installed"
        nic = (f"user,model=virtio-net-pci,restrict=on,mac={self.mac},"
               f"net=10.0.2.0/24,host=10.0.2.2,ipv6-net=fd00:10::/64,ipv6-host=fd00:10::2,"
               f"hostfwd=tcp:127.0.0.1:{self.port}-{GUEST_IP}:22")
        if self.forge:
            relay = f"{sys.executable} {HERE / 'guestfwd-relay.py'} {self.forge.port}"
            check("," not in relay, f"QEMU's option syntax cannot take a comma in {relay}")
            nic += f",guestfwd=tcp:{FORGE_ADDR}:{FORGE_PORT}-cmd:{relay}"
        # qemu64 rather than max: with fewer CPU features to emulate (AVX2,
        # la57, ...) a TCG guest reached converged 11-12% sooner, in paired
        # boots of both flavours; nothing here needs more than x86-64 v1.
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64", "-smp", "1", "-m", "1536",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-append", append,
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-drive", f"file={self.dir / 'seed.iso'},media=cdrom,readonly=on",
            "-virtfs", f"local,path={self.share},mount_tag=fleet,security_model=none,readonly=on",
            "-nic", nic,
            "-serial", f"file:{self.console}",
        ]
        (self.dir / "qemu.argv").write_text(" ".join(argv) + "\n")
        self.started_at = time.monotonic()
        GUESTS.append(self)
        self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(self.dir / "qemu.log", "w"),
                                     stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.qemu and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()
        if self.forge:
            self.forge.stop()

    # SSH

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", "-q", "-i", str(self.r.key), "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                # One SSH handshake per boot: under TCG each costs the guest
                # seconds of CPU.
                # A short directory: ssh appends 17 characters to the socket
                # path while creating it, and a Unix socket path has at most
                # 107; past that the master fails and every login hangs.
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.r.ssh_dir}/%C",
                "-o", "ControlPersist=300",
                f"{ADMIN}@127.0.0.1", command]

    def sh(self, command: str, timeout=120, ok=True) -> str:
        """Runs `command` as root in the guest; returns stdout."""
        p = subprocess.run(self.ssh_argv(f"sudo sh -c {shquote(command)}"), capture_output=True,
                           text=True, timeout=timeout)
        if ok and p.returncode != 0:
            raise Failed(f"guest command failed ({p.returncode}): {command}\n{p.stderr}{p.stdout}")
        return p.stdout

    def rc(self, command: str, timeout=120) -> int:
        return subprocess.run(self.ssh_argv(f"sudo sh -c {shquote(command)}"), capture_output=True,
                              timeout=timeout).returncode

    def wait_ssh(self, timeout=BOOT_TIMEOUT_S) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.qemu and self.qemu.poll() is not None:
                raise Failed(f"QEMU exited with {self.qemu.returncode}")
            try:
                p = subprocess.run(self.ssh_argv("true"), capture_output=True, timeout=30)
                if p.returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(3)
        raise Failed(f"no SSH login as {ADMIN} within {timeout}s")

    def wait(self, what: str, probe, timeout: float, every=3.0):
        until = time.monotonic() + timeout
        last = None
        while time.monotonic() < until:
            try:
                last = probe()
                if last:
                    return last
            except (Failed, subprocess.TimeoutExpired) as e:
                last = e
            time.sleep(every)
        raise Failed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")

    def json(self, command: str):
        return json.loads(self.sh(command))

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def fabric(self, args: str) -> str:
        if self.fabric_installed:
            return self.sh(f"/run/current-system/sw/bin/fabric {args}")
        return self.sh(f"nix run '{self.fabric_flake_ref}' -- {args}", timeout=600)

    def boot_id(self) -> str:
        return self.sh("cat /proc/sys/kernel/random/boot_id").strip()

    def diagnostics(self) -> str:
        parts = []
        try:
            text = self.console.read_text(errors="replace").splitlines()
            parts.append("--- serial console (last 60 lines) ---")
            parts += text[-60:]
        except OSError as e:
            parts.append(f"(no console: {e})")
        try:
            units = " ".join(f"-u {u}" for u in self.units + ["fabric-agent.service", "fabric-switch-*"])
            parts.append("--- journal of the units involved (last 120 lines) ---")
            parts.append(self.sh(f"journalctl -b --no-pager -o short-monotonic {units} | tail -n 120", timeout=60))
        except Exception as e:  # noqa: BLE001 - diagnostics must not hide the failure
            parts.append(f"(journal unavailable: {e})")
        if self.forge:
            parts.append("--- the forge's sshd log (last 30 lines) ---")
            parts += self.forge.log_text().splitlines()[-30:]
        return "\n".join(parts)


def shquote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# --- the scenarios ------------------------------------------------------------------


def pid1_events(g: Guest) -> list[tuple[float, str]]:
    """PID 1's journal of this boot: (seconds since boot, message)."""
    out = []
    for line in g.sh("journalctl -b --no-pager -o short-monotonic _PID=1").splitlines():
        m = re.match(r"\[\s*([0-9.]+)\]\s+\S+\s+\S+:\s(.*)", line)
        if m:
            out.append((float(m.group(1)), m.group(2)))
    return out


def deployments(g: Guest, file: str) -> list[dict]:
    st = g.json(f"cat /var/lib/fabric/{file}")
    return st.get("history", [])


def switch_log(g: Guest) -> list[str]:
    return g.sh("cat /var/lib/vmtest/switch.log 2>/dev/null || true").splitlines()


def store_path_of(g: Guest, link: str) -> str:
    return g.sh(f"readlink -f {link}").strip()


def assert_first_boot(g: Guest, rev: str, label: str, bench: dict | None = None) -> None:
    """Scenario 1's assertions (also scenario 2's and the ends of 8 and 9)."""
    # The admin user: exactly the Machine's key, in wheel, password locked.
    pw = g.sh(f"getent passwd {ADMIN}").strip().split(":")
    check(pw[6] == "/run/current-system/sw/bin/bash", f"admin shell is {pw[6]}")
    groups = g.sh(f"id -nG {ADMIN}").split()
    check("wheel" in groups, f"{ADMIN} is not in wheel: {groups}")
    status = g.sh(f"passwd -S {ADMIN}").split()
    check(status[1] == "L", f"the password is not locked: {status}")
    keys = [k for k in g.sh(f"cat ~{ADMIN}/.ssh/authorized_keys").splitlines() if k and not k.startswith("#")]
    check(keys == [g.r.pubkey], f"authorized_keys is {keys}, expected exactly the Machine's key")
    # Hostname and FQDN.
    check(g.sh("hostname").strip() == g.hostname, "hostname")
    # The FQDN reaches cloud-init's update_hostname, which applies it as the
    # distro does: Debian and the nixos distro both write the short name to
    # /etc/hostname, and neither /etc/hosts carries the FQDN (NixOS takes it
    # from the flake's networking.domain).
    check(g.sh("cat /etc/hostname").strip() == g.hostname, "/etc/hostname")
    log = g.sh("cat /var/log/cloud-init.log")
    check(f"Updating hostname to {g.hostname}.vmtest.internal ({g.hostname})" in log,
          "cloud-init's update_hostname did not apply the FQDN")
    check("Failed to update the hostname" not in log and "Failed to set the hostname" not in log,
          "cloud-init failed to set the hostname")
    # The static addresses on the NIC matched by MAC and renamed by set-name.
    links = g.json("ip -j address show")
    nic = [l for l in links if l.get("address") == g.mac]
    check(len(nic) == 1, f"no single NIC with MAC {g.mac}: {[l.get('ifname') for l in links]}")
    nic = nic[0]
    check(nic["ifname"] == IFACE, f"the NIC is named {nic['ifname']}, not {IFACE}")
    addrs = {(a["family"], a["local"], a["prefixlen"]) for a in nic.get("addr_info", [])}
    check(("inet", GUEST_IP, 24) in addrs, f"no {GUEST_IP}/24 on {IFACE}: {addrs}")
    check(("inet6", GUEST_IP6, 64) in addrs, f"no {GUEST_IP6}/64 on {IFACE}: {addrs}")
    # The flake target.
    st = g.sh("stat -c '%a %U:%G' /etc/nix-flake-target").strip()
    check(st == "644 root:root", f"/etc/nix-flake-target is {st}")
    check(g.sh("cat /etc/nix-flake-target").strip() == g.fleet.flake_ref(), "flake target content")
    # Ordered after network-online.target, and started after it was reached
    # (PID 1's journal: the runtime unit is unloaded once it is done, and
    # `systemctl show` then forgets its timestamps).
    unit = g.show("fabric-bootstrap.service", "After", "UnitFileState", "FragmentPath")
    check("network-online.target" in unit["After"].split(), f"After= is {unit['After']}")
    events = pid1_events(g)
    online = [t for t, m in events if "Reached target network-online.target" in m]
    starts = [t for t, m in events if "Starting fabric-bootstrap.service" in m]
    finished = [t for t, m in events if "Finished fabric-bootstrap.service" in m]
    check(online and starts and finished, f"journal: online {online}, starts {starts}, finished {finished}")
    check(online[0] <= starts[0], f"bootstrap started at {starts[0]}s, network-online.target at {online[0]}s")
    check(unit["FragmentPath"] in ("", "/run/systemd/system/fabric-bootstrap.service"),
          f"the unit is {unit['FragmentPath']}")
    # Activation ran in a transient systemd-run unit.
    journal = g.sh("journalctl -b --no-pager -o cat _PID=1")
    started = re.findall(r"Started (fabric-switch-\S+)\.service", journal)
    check(started, "the journal shows no fabric-switch-* transient unit started by systemd")
    # switch-to-configuration switch of the pinned revision.
    log = switch_log(g)
    check(f"{label} {rev} switch" in log, f"switch log is {log}, expected '{label} {rev} switch'")
    # Marker, disabled unit, and status.
    marker = g.sh("cat /var/lib/nixos-bootstrap-complete")
    check(f"revision={rev}" in marker, f"marker: {marker}")
    check(unit["UnitFileState"] not in ("enabled", "enabled-runtime"),
          f"fabric-bootstrap.service is still {unit['UnitFileState']}")
    # The runtime unit has no [Install] section: nothing may start it at boot
    # (`static`); only the per-boot hook does, and it checks the marker.
    check(g.rc("ls /etc/systemd/system/*.wants/fabric-bootstrap.service "
               "/run/systemd/system/*.wants/fabric-bootstrap.service") != 0, "the unit is wanted by a target")
    s = json.loads(g.fabric("status --json"))
    check(s.get("bootstrap_complete") is True, f"status: {s}")
    check(s.get("revision") == rev, f"status revision {s.get('revision')} != {rev}")
    check(store_path_of(g, "/run/current-system") == s.get("store_path"), "running != status store path")
    if bench is not None:
        d = [x for x in deployments(g, "bootstrap.json") if x.get("revision") == rev][-1]
        build, activation = d.get("build_seconds"), d.get("activation_seconds")
        unit_s = finished[-1] - starts[-1]
        # What bootstrap adds beyond the build and switch it drives: daemon
        # reloads PID 1 did while the unit ran, and the unit's own log with
        # the guest's monotonic times (each line is a step, so the gaps
        # show where the rest of the time goes).
        reloads = [t for t, m in events if starts[-1] <= t <= finished[-1]
                   and m.strip() == "Reloading."]
        log = g.sh("journalctl -b --no-pager -o short-monotonic -u fabric-bootstrap.service").splitlines()
        driven = (build or 0) + (activation or 0)
        bench.update(
            boot_to_converged_s=finished[-1],
            bootstrap_unit_s=unit_s,
            build_s=build,
            activation_s=activation,
            bootstrap_own_s=unit_s - driven,
            bootstrap_own_ratio=(unit_s - driven) / driven if driven else None,
            bootstrap_daemon_reloads=len(reloads),
            bootstrap_log=log[-40:],
        )


def scenario_first_boot(g: Guest, ctx: dict) -> None:
    rev = ctx["rev1"]
    ctx["bench"] = {}
    g.wait("the bootstrap marker", lambda: g.rc("test -e /var/lib/nixos-bootstrap-complete") == 0, BOOT_TIMEOUT_S)
    g.wait("fabric-bootstrap.service to finish",
           lambda: g.show("fabric-bootstrap.service", "ActiveState")["ActiveState"] != "activating", 120)
    assert_first_boot(g, rev, "rev1", ctx["bench"])


def scenario_reboot(g: Guest, ctx: dict) -> None:
    before = {
        "boot": g.boot_id(),
        "instance": g.sh("cat /var/lib/cloud/data/instance-id").strip(),
        "sems": g.sh("cd /var/lib/cloud/instance/sem && stat -c '%n %Y' config_write_files config_users_groups"),
        "state": g.sh("cat /var/lib/fabric/bootstrap.json"),
        "switches": switch_log(g),
    }
    g.sh("systemctl reboot", ok=False)
    g.wait("the guest to come back with a new boot id",
           lambda: g.rc("true") == 0 and g.boot_id() != before["boot"], BOOT_TIMEOUT_S, every=5)
    g.wait("cloud-final to finish", lambda: g.show("cloud-final.service", "ActiveState")["ActiveState"]
           in ("active", "failed"), 600)
    check(g.sh("cat /var/lib/cloud/data/instance-id").strip() == before["instance"], "instance-id changed")
    sems = g.sh("cd /var/lib/cloud/instance/sem && stat -c '%n %Y' config_write_files config_users_groups")
    check(sems == before["sems"], f"per-instance modules ran again: {before['sems']} -> {sems}")
    check(g.sh("cat /var/lib/fabric/bootstrap.json") == before["state"], "bootstrap.json changed")
    check(switch_log(g) == before["switches"], "switch-to-configuration ran again")
    journal = g.sh("journalctl -b --no-pager -o cat")
    check("bootstrap is complete" in journal, "the per-boot hook did not report the completed bootstrap")
    started = [m for _, m in pid1_events(g) if "fabric-bootstrap.service" in m]
    check(not started, f"fabric-bootstrap.service was touched this boot: {started}")
    check(store_path_of(g, "/run/current-system") == before_current(before), "booted the wrong generation")


def before_current(before: dict) -> str:
    return json.loads(before["state"])["current"]["store_path"]


def agent_pid(g: Guest) -> int:
    return int(g.show("fabric-agent.service", "MainPID")["MainPID"])


def install_agent(g: Guest, unit_text: str) -> None:
    """Installs (or replaces) the agent unit and (re)starts it."""
    put(g, "/run/systemd/system/fabric-agent.service", unit_text, "0644")
    g.sh("systemctl daemon-reload && systemctl restart fabric-agent.service", timeout=300)


def put(g: Guest, path: str, text: str, mode: str) -> None:
    """Writes a root-owned file on the guest through SSH's stdin, never a
    command line (sudo logs command lines to the journal)."""
    p = subprocess.run(g.ssh_argv(f"sudo install -D -m {mode} -o root -g root /dev/stdin {path}"),
                       input=text, text=True, capture_output=True, timeout=60)
    check(p.returncode == 0, f"cannot write {path} on the guest: {p.stderr}")


def scenario_agent(g: Guest, ctx: dict) -> None:
    install_agent(g, g.r.agent_unit)
    props = g.show("fabric-agent.service", "ActiveState", "SubState", "Type", "WatchdogUSec", "ExecStart",
                   "NRestarts", "MainPID")
    check(props["Type"] == "notify", f"Type={props['Type']}")
    check(props["ActiveState"] == "active", f"agent is {props['ActiveState']}/{props['SubState']} after start")
    check(props["WatchdogUSec"] == f"{AGENT_WATCHDOG_S}s", f"WatchdogUSec={props['WatchdogUSec']}")
    check(g.r.fabric_store_path + "/bin/fabric" in props["ExecStart"], f"ExecStart={props['ExecStart']}")
    pid = int(props["MainPID"])
    time.sleep(3 * AGENT_WATCHDOG_S + 5)
    after = g.show("fabric-agent.service", "ActiveState", "SubState", "NRestarts", "MainPID")
    check(after["ActiveState"] == "active" and after["SubState"] == "running", f"agent is {after}")
    check(int(after["MainPID"]) == pid and after["NRestarts"] == "0",
          f"the agent was restarted during three watchdog periods: {after}")
    check("watchdog timeout" not in g.sh("journalctl -b --no-pager -o cat -u fabric-agent.service").lower(),
          "watchdog timeout in the journal")
    metrics = g.sh(f"curl -fsS http://{METRICS}/metrics")
    check("fabric_" in metrics, f"metrics do not answer: {metrics[:200]}")
    ctx["bench"]["agent_idle_rss_kib"] = int(
        g.sh(f"awk '/^VmRSS/ {{print $2}}' /proc/{pid}/status").strip())
    mem = g.show("fabric-agent.service", "MemoryCurrent")["MemoryCurrent"]
    ctx["bench"]["agent_memory_current_kib"] = int(mem) // 1024 if mem.isdigit() else None


def agent_history(g: Guest) -> list[dict]:
    return deployments(g, "agent.json")


def wait_deployment(g: Guest, rev: str, timeout: float, after: float = 0.0) -> dict:
    def done():
        for d in reversed(agent_history(g)):
            if d.get("revision") == rev and d.get("outcome") != "in-progress" \
                    and parse_time(d["started_at"]) > after:
                return d
        return None
    return g.wait(f"the agent's deployment of {rev[:12]}", done, timeout)


def scenario_new_commit(g: Guest, ctx: dict) -> None:
    rev = g.fleet.commit("rev2")
    g.fleet.publish()
    # The guest's clock, not the host's: a TCG guest's clock drifts.
    committed = float(g.sh("date +%s.%N"))
    d = wait_deployment(g, rev, AGENT_INTERVAL_S + DEPLOY_TIMEOUT_S)
    check(d["outcome"] == "switched", f"rev2: {d}")
    started = parse_time(d["started_at"])
    check(started - committed <= AGENT_INTERVAL_S + 5,
          f"the agent took {started - committed:.0f}s to notice the commit (interval {AGENT_INTERVAL_S}s)")
    check(f"rev2 {rev} switch" in switch_log(g), "rev2 was not switched")
    s = json.loads(g.fabric("status --json"))
    check(s.get("revision") == rev, f"status shows {s.get('revision')}, not {rev}")
    check(store_path_of(g, "/run/current-system") == d["store_path"], "running system is not rev2")
    ctx["rev2"] = rev
    ctx["rev2_path"] = d["store_path"]


def parse_time(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_rejected(g: Guest, rev: str, label: str, good_rev: str, good_path: str, phase: str) -> None:
    d = wait_deployment(g, rev, AGENT_INTERVAL_S + DEPLOY_TIMEOUT_S)
    check(d["outcome"] == "rolled-back", f"{label}: {d}")
    check((d.get("error") or {}).get("phase") == phase, f"{label} failed in {d.get('error')}")
    check(store_path_of(g, "/run/current-system") == good_path, f"{label}: not rolled back to rev2")
    check(store_path_of(g, "/nix/var/nix/profiles/system") == good_path, f"{label}: profile not rolled back")
    st = g.json("cat /var/lib/fabric/agent.json")
    check(any(x["revision"] == rev for x in st.get("rejected", [])), f"{label} not recorded as rejected")
    check(st["current"]["revision"] == good_rev, f"current is {st['current']}")
    log = switch_log(g)
    check(log[-2:] == [f"{label} {rev} switch", f"rev2 {good_rev} switch"], f"switch log ends {log[-3:]}")
    # Not retried while the remote stays put.
    tries = sum(1 for x in agent_history(g) if x.get("revision") == rev)
    time.sleep(2 * AGENT_INTERVAL_S + 5)
    check(sum(1 for x in agent_history(g) if x.get("revision") == rev) == tries, f"{label} was retried")
    check(switch_log(g) == log, f"{label} was switched again")


def scenario_rollback(g: Guest, ctx: dict) -> None:
    rev3 = g.fleet.commit("rev3", switch_code=4)
    g.fleet.publish()
    assert_rejected(g, rev3, "rev3", ctx["rev2"], ctx["rev2_path"], "switch")
    rev4 = g.fleet.commit("rev4", unhealthy=True)
    g.fleet.publish()
    assert_rejected(g, rev4, "rev4", ctx["rev2"], ctx["rev2_path"], "health")


def scenario_kill(g: Guest, ctx: dict) -> None:
    restarts = int(g.show("fabric-agent.service", "NRestarts")["NRestarts"])
    rev = g.fleet.commit("rev5", build_seconds=30)
    g.fleet.publish()

    def building():
        st = g.json("cat /var/lib/fabric/agent.json")
        h = st.get("history", [])
        return bool(h) and h[-1].get("revision") == rev and h[-1].get("phase") == "build" \
            and h[-1].get("outcome") == "in-progress" \
            and g.rc("pgrep -f 'nixos-system-.*-rev5|build.sh'") == 0
    g.wait("the agent to be building rev5", building, AGENT_INTERVAL_S + DEPLOY_TIMEOUT_S, every=2)
    time.sleep(5)
    killed_at = float(g.sh("date +%s.%N && systemctl kill -s KILL fabric-agent.service").split()[0])
    g.wait("systemd to restart the agent",
           lambda: int(g.show("fabric-agent.service", "NRestarts")["NRestarts"]) > restarts
           and g.show("fabric-agent.service", "ActiveState")["ActiveState"] == "active", 300)
    d = wait_deployment(g, rev, DEPLOY_TIMEOUT_S, after=killed_at)
    check(d["outcome"] == "switched", f"rev5 after the kill: {d}")
    # The killed run is closed as failed in the phase it died in.
    killed = [x for x in agent_history(g) if x.get("revision") == rev and parse_time(x["started_at"]) < killed_at]
    check(len(killed) == 1 and killed[0]["outcome"] == "failed"
          and (killed[0].get("error") or {}).get("phase") == "build", f"the killed run is recorded as {killed}")
    path = d["store_path"]
    check(store_path_of(g, "/run/current-system") == path, "running system is not rev5")
    # The profile is whole: its link names a generation whose target is a
    # valid store path, and so does every other generation.
    check(store_path_of(g, "/nix/var/nix/profiles/system") == path, "profile is not rev5")
    gens = g.sh("ls -1 /nix/var/nix/profiles | grep '^system-[0-9]*-link$'").split()
    for link in gens:
        check(g.rc(f"nix-store --check-validity $(readlink -f /nix/var/nix/profiles/{link})") == 0,
              f"generation {link} points at an invalid path")
    check(g.rc("ls /nix/var/nix/profiles/ | grep -q '\\.tmp\\|tmp-'") != 0, "a temporary profile link remains")
    st = g.json("cat /var/lib/fabric/agent.json")
    check(st["current"]["revision"] == rev, f"current is {st['current']}")


REMOTE_LATE_ATTEMPTS = 6


def scenario_remote_late(g: Guest, ctx: dict) -> None:
    # The forge is not up yet (its sshd starts at the first publish): bootstrap
    # must wait for it.
    def attempts():
        j = g.sh("journalctl -b --no-pager -o short-unix -u fabric-bootstrap.service")
        return [l for l in j.splitlines() if "waiting for flake remote" in l]
    # Six attempts, not three: a line's time is its attempt's end, so a gap
    # is the backoff delay plus the next attempt's run. Over SSH under TCG a
    # run takes 1 to 3 s and varies by as much, which swamps the first
    # delays (0.5-1 s, then 1-2 s; gaps of 3.5 s then 2.6 s were seen); the
    # fifth delay (8-16 s) does not drown in it.
    g.wait(f"{REMOTE_LATE_ATTEMPTS} waiting attempts in the journal",
           lambda: len(attempts()) >= REMOTE_LATE_ATTEMPTS, BOOT_TIMEOUT_S)
    check(g.rc("test -e /var/lib/nixos-bootstrap-complete") != 0, "bootstrap completed without a remote")
    g.fleet.publish()
    g.wait("the bootstrap marker", lambda: g.rc("test -e /var/lib/nixos-bootstrap-complete") == 0, 600)
    lines = attempts()
    stamps = [float(l.split()[0]) for l in lines]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    check(len(lines) >= REMOTE_LATE_ATTEMPTS, f"only {len(lines)} progress lines: {lines}")
    check(gaps[-1] > gaps[0], f"no backoff between attempts: gaps {gaps}")
    assert_first_boot(g, ctx["rev1"], "rev1")


def scenario_failing_build(g: Guest, ctx: dict) -> None:
    def failed():
        st = g.json("cat /var/lib/fabric/bootstrap.json 2>/dev/null || echo '{}'")
        h = st.get("history", [])
        return h and h[-1].get("outcome") == "build-failed" and h[-1]
    d = g.wait("the first build to fail", failed, BOOT_TIMEOUT_S)
    err = d.get("error") or {}
    check(err.get("phase") == "build", f"failure phase {err}")
    check("deliberate build failure" in err.get("tail", ""), f"error tail: {err.get('tail')!r}")
    # The machine stays up and reachable, and the unit waits to retry.
    check(g.rc("true") == 0, "unreachable")
    props = g.show("fabric-bootstrap.service", "RestartUSec", "SubState", "NRestarts")
    check(props["RestartUSec"] == "30s", f"RestartUSec={props['RestartUSec']}")
    # A second failed attempt, 30 s after the first (systemd 252 has no
    # RestartSteps, so the delay stays at RestartSec).
    g.wait("a retry", lambda: int(g.show("fabric-bootstrap.service", "NRestarts")["NRestarts"]) >= 1, 300)
    j = g.sh("journalctl -b --no-pager -o short-unix -u fabric-bootstrap.service")
    starts = [float(l.split()[0]) for l in j.splitlines() if "Starting fabric-bootstrap.service" in l
              or re.search(r"Starting .*[Bb]ootstrap", l)]
    check(len(starts) >= 2 and starts[1] - starts[0] >= 30, f"retry times {starts}")
    fixed = g.fleet.commit("rev1-fixed")
    g.fleet.publish()
    g.wait("the bootstrap marker after the fix",
           lambda: g.rc("test -e /var/lib/nixos-bootstrap-complete") == 0, BOOT_TIMEOUT_S)
    g.wait("fabric-bootstrap.service to finish",
           lambda: g.show("fabric-bootstrap.service", "ActiveState")["ActiveState"] != "activating", 120)
    assert_first_boot(g, fixed, "rev1-fixed")


def scenario_without_fabric(g: Guest, ctx: dict) -> None:
    # The booted generation is the template's until the next boot, whatever
    # bootstrap has switched to since; its sw/bin must exist for the absence
    # of fabric there to mean anything.
    check(g.rc("test -d /run/booted-system/sw/bin") == 0, "no /run/booted-system/sw/bin")
    check(g.rc("test -e /run/booted-system/sw/bin/fabric") != 0, "the template has fabric installed")
    g.wait("the bootstrap marker", lambda: g.rc("test -e /var/lib/nixos-bootstrap-complete") == 0, 1200)
    g.wait("fabric-bootstrap.service to finish",
           lambda: g.show("fabric-bootstrap.service", "ActiveState")["ActiveState"] != "activating", 120)
    journal = g.sh("journalctl -b --no-pager -o cat -u fabric-bootstrap.service")
    check("bootstrap complete" in journal, "no bootstrap completion in the unit's journal")
    cmd = g.sh("systemctl show -p ExecStart fabric-bootstrap.service")
    check("fabric-bootstrap run" in cmd, cmd)
    # The rest of this machine's first boot (scenario 1's assertions) was
    # asserted by scenario 9, which runs before this one on the same guest.


def key_body_lines(key: Path) -> list[str]:
    """The private key's base64 lines: any one of them in a log is a leak
    (they survive JSON escaping, which only touches the newlines)."""
    return [l for l in key.read_text().splitlines() if l and not l.startswith("-----")]


def logged(g: Guest, needles: list[str]) -> dict[str, int]:
    """How often each of `needles` occurs in everything the machine logged
    or recorded: the whole journal of every boot with every field (command
    lines of logging processes included), cloud-init's logs and fabric's
    state, read once. The needles reach grep through SSH's stdin, never a
    command line, which sudo would log."""
    command = ("exec 3<&0; { journalctl --no-pager -o export; cat /var/log/cloud-init.log "
               "/var/log/cloud-init-output.log; find /var/lib/fabric -type f -exec cat {} +; } 2>/dev/null "
               "| grep -a -o -F -f /dev/fd/3 | sort | uniq -c || true")
    p = subprocess.run(g.ssh_argv(f"sudo sh -c {shquote(command)}"), input="\n".join(needles) + "\n",
                       text=True, capture_output=True, timeout=600)
    check(p.returncode == 0, f"the leak check did not run: {p.stderr}")
    counts: dict[str, int] = {}
    for line in p.stdout.splitlines():
        n, _, needle = line.strip().partition(" ")
        counts[needle] = counts.get(needle, 0) + int(n)
    return counts


def assert_not_logged(g: Guest, keys: dict[Path, str]) -> None:
    """No line of any of `keys` (key file -> its fingerprint) was logged or
    recorded. The same search must find every fingerprint, which the
    journal holds: a search that finds nothing would pass for no leak."""
    lines = {l for key in keys for l in key_body_lines(key)}
    counts = logged(g, sorted(lines) + sorted(keys.values()))
    for fp in keys.values():
        check(counts.get(fp, 0) > 0, f"the leak check does not find the fingerprint {fp} either")
    leaks = sum(n for needle, n in counts.items() if needle in lines)
    check(leaks == 0, f"{leaks} occurrences of deploy key lines in the journal, cloud-init's logs or "
                      "fabric's state (the lines are not shown)")


def assert_credential(g: Guest, source: str, want: dict) -> None:
    """`fabric status --json` (or a state file) names the credential `want`."""
    got = json.loads(source).get("credential")
    check(got == want, f"the credential recorded is {got}, expected {want}")


def scenario_private_fleet(g: Guest, ctx: dict) -> None:
    forge = g.forge
    assert forge is not None
    fp = Forge.fingerprint(forge.deploy_key)
    host = f"[{FORGE_ADDR}]:{FORGE_PORT}"
    want = {"kind": "ssh-key", "fingerprint": fp, "host": host}
    # Scenario 8 asserted the first boot's converge from the git+ssh
    # reference; the repository is only on the forge, and the forge saw
    # the deploy key, and no other.
    logins = forge.accepted()
    check(logins and set(logins) == {fp}, f"the forge accepted {logins}, expected the deploy key {fp}")
    # The credential files, as the contract has them.
    files = {"ssh-key": forge.deploy_key.read_text(), "known_hosts": forge.known_hosts}
    for name, content in files.items():
        path = f"{CREDENTIALS_DIR}/{name}"
        st = g.sh(f"stat -c '%a %U:%G' {path}").strip()
        check(st == "600 root:root", f"{path} is {st}, expected 600 root:root")
        check(g.sh(f"cat {path}") == content, f"{path} does not hold the Secret's {name} (content not shown)")
    check(g.rc(f"test -e {CREDENTIALS_DIR}/access-tokens") != 0, "an access-tokens file was written for an SSH key")
    # Bootstrap named the key by its fingerprint (journal of the first boot,
    # state, status), and the key itself appears nowhere.
    journal = g.sh("journalctl --no-pager -o cat -u fabric-bootstrap.service")
    check(fp in journal, f"the bootstrap journal does not name the key's fingerprint {fp}")
    assert_credential(g, g.sh("cat /var/lib/fabric/bootstrap.json"), want)
    assert_credential(g, g.fabric("status --json"), want)

    # The agent, as the module defines it with no credential option, keeps
    # using the first-boot files.
    install_agent(g, g.r.agent_unit)
    rev = g.fleet.commit("rev2-ssh")
    before = len(forge.accepted())
    g.fleet.publish()
    d = wait_deployment(g, rev, AGENT_INTERVAL_S + DEPLOY_TIMEOUT_S)
    check(d["outcome"] == "switched", f"rev2-ssh: {d}")
    check(f"rev2-ssh {rev} switch" in switch_log(g), "rev2-ssh was not switched")
    check(store_path_of(g, "/run/current-system") == d["store_path"], "the running system is not rev2-ssh")
    check(forge.accepted()[before:] and set(forge.accepted()[before:]) == {fp},
          f"the agent's fetches reached the forge as {forge.accepted()[before:]}, expected {fp}")
    check(fp in g.sh("journalctl -b --no-pager -o cat -u fabric-agent.service"),
          "the agent's journal does not name the key's fingerprint")
    assert_credential(g, g.sh("cat /var/lib/fabric/agent.json"), want)

    # Rotation, as the README describes it: a new deploy key in a file a
    # secret manager owns (agenix's /run/agenix), named by the module's
    # services.fabric.credentials options; the forge then revokes the
    # first-boot key, so only the option's file can fetch.
    rotated = forge.new_key("rotated")
    put(g, "/run/agenix/fleet-deploy-key", rotated.read_text(), "0600")
    put(g, "/run/agenix/fleet-known-hosts", forge.known_hosts, "0644")
    unit = render_agent_unit(g.r.fabric_store_path, {"sshKeyFile": "/run/agenix/fleet-deploy-key",
                                                     "knownHostsFile": "/run/agenix/fleet-known-hosts"})
    check("--ssh-key-file" in unit and "/run/agenix/fleet-deploy-key" in unit,
          "services.fabric.credentials.sshKeyFile does not reach the agent's command line")
    forge.authorize([rotated])
    install_agent(g, unit)
    rev = g.fleet.commit("rev3-rotated")
    before = len(forge.accepted())
    g.fleet.publish()
    d = wait_deployment(g, rev, AGENT_INTERVAL_S + DEPLOY_TIMEOUT_S)
    check(d["outcome"] == "switched", f"rev3-rotated: {d}")
    check(store_path_of(g, "/run/current-system") == d["store_path"], "the running system is not rev3-rotated")
    fp2 = Forge.fingerprint(rotated)
    check(forge.accepted()[before:] and set(forge.accepted()[before:]) == {fp2},
          f"after the rotation the forge accepted {forge.accepted()[before:]}, expected only {fp2}")
    assert_credential(g, g.sh("cat /var/lib/fabric/agent.json"),
                      {"kind": "ssh-key", "fingerprint": fp2, "host": host})
    s = json.loads(g.fabric("status --json"))
    check(s.get("revision") == rev, f"status shows {s.get('revision')}, not {rev}")
    # Once for the whole scenario: the journal and the state keep the first
    # boot's records beside the agent's.
    assert_not_logged(g, {forge.deploy_key: fp, rotated: fp2})


# --- guests and their scenario lists ---------------------------------------------------


def make_fabric_flake(g: Guest) -> str:
    repo = g.dir / "fabric-flake"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "flake.nix").write_text((HERE / "fleet" / "fabric-flake.nix").read_text())
    (repo / "flake.lock").write_text('{"nodes":{"root":{}},"root":"root","version":7}\n')
    shutil.copy(g.r.package / "bin" / "fabric", repo / "fabric")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fabric under test")
    git(repo, "clone", "-q", "--bare", str(repo), str(g.share / "fabric.git"))
    return "git+file:///srv/fleet/fabric.git?ref=main"


PLANS = {
    # guest name: (fabric installed, scenarios in order)
    "tmpl": (True, [("1 first boot, fabric installed", scenario_first_boot),
                    ("4 agent under systemd", scenario_agent),
                    ("5 new commit", scenario_new_commit),
                    ("6 rollback", scenario_rollback),
                    ("7 kill -9", scenario_kill)]),
    # The reboot runs on the machine scenario 8 bootstrapped, off the
    # longest guest's path.
    # Its fleet is private: served over SSH by the forge (Forge), which
    # comes up only when scenario 8 publishes the repository; scenario 10
    # then checks the credential and lets the agent converge through it.
    "late": (True, [("8 remote late", scenario_remote_late),
                    ("3 reboot", scenario_reboot),
                    ("10 private fleet over SSH", scenario_private_fleet)]),
    # One guest for two first boots: the template without fabric fetches it
    # from its flake, and the fleet's first commit fails to build, so the
    # failure, the retries and the fix go through `nix run` of that flake.
    # A guest of its own for each cost two of eight boots and proved nothing
    # more: the unit, the retry policy and the recorded failure are the same
    # with fabric installed (scenario 1 covers that path's clean first boot).
    "bare": (False, [("9 failing first build", scenario_failing_build),
                     ("2 first boot, fabric from its flake", scenario_without_fabric)]),
}
PRIVATE_FLEET = {"late"}


def run_guest(r: Run, flavour: str, name: str, index: int, results: list, bench: dict) -> None:
    with_fabric, scenarios = PLANS[name]
    mac = f"52:54:00:7e:{index // 256:02x}:{index % 256:02x}"
    g = Guest(r, flavour, name, mac, with_fabric, private_fleet=name in PRIVATE_FLEET)
    ctx: dict = {}
    fabric_flake = None
    try:
        # A plan that checks a failing first build starts from one.
        fails_first = any(fn is scenario_failing_build for _, fn in scenarios)
        ctx["rev1"] = g.fleet.commit("rev1", fail_build=fails_first)
        if name != "late":
            g.fleet.publish()
        if not with_fabric:
            fabric_flake = make_fabric_flake(g)
            g.fabric_flake_ref = fabric_flake
        g.machine_yaml(fabric_flake)
        g.boot()
        g.wait_ssh()
        say(f"{flavour}/{name}: SSH up {time.monotonic() - g.started_at:.0f}s after QEMU start")
    except Exception as e:  # noqa: BLE001
        for title, _ in scenarios:
            results.append((flavour, title, False, 0.0))
        say(f"FAIL {flavour}/{name}: boot: {e}\n{g.diagnostics()}")
        g.stop()
        return
    broken = None
    for title, fn in scenarios:
        if broken:
            results.append((flavour, title, False, 0.0))
            say(f"SKIP {flavour} scenario {title}: an earlier scenario on this guest failed ({broken})")
            continue
        started = time.monotonic()
        try:
            fn(g, ctx)
            took = time.monotonic() - started
            results.append((flavour, title, True, took))
            say(f"ok   {flavour} scenario {title} ({took:.0f}s)")
        except Exception as e:  # noqa: BLE001
            took = time.monotonic() - started
            results.append((flavour, title, False, took))
            detail = e if isinstance(e, Failed) else traceback.format_exc()
            say(f"FAIL {flavour} scenario {title} ({took:.0f}s): {detail}\n{g.diagnostics()}")
            broken = title
    if "bench" in ctx:
        bench[flavour] = ctx["bench"]
    g.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, type=Path, help="directory vmtest/image.sh printed")
    ap.add_argument("--fabric", required=True, type=Path, help="the fabric binary under test")
    ap.add_argument("--flavour", action="append", choices=["debian", "nixos-cloud-init"],
                    help="run only this flavour (repeatable; default: both)")
    ap.add_argument("--guest", action="append", choices=list(PLANS), help="run only this guest's scenarios")
    ap.add_argument("--parallel", type=int, default=int(os.environ.get("FABRIC_VMTEST_PARALLEL", "4")))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--bench-out", type=Path, help="write the measured figures as JSON here")
    args = ap.parse_args()
    flavours = args.flavour or ["debian", "nixos-cloud-init"]
    guests = args.guest or list(PLANS)

    def stop_all(*_):
        # The guest threads are not daemons: exit at once, without them
        # starting the next guests.
        for g in list(GUESTS):
            g.stop()
        os._exit(130)
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    work = Path(tempfile.mkdtemp(prefix="fabric-vmtest-"))
    os.chmod(work, 0o755)
    shutil.copy(args.fabric, work / "fabric")
    r = Run(work, args.image, work / "fabric")
    say(f"work directory {work}; fabric package {r.fabric_store_path}")

    jobs = [(f, n) for n in guests for f in flavours]
    results: list = []
    bench: dict = {}
    sem = threading.Semaphore(max(1, args.parallel))
    threads = []

    def job(i, f, n):
        with sem:
            run_guest(r, f, n, i, results, bench)

    for i, (f, n) in enumerate(jobs):
        t = threading.Thread(target=job, args=(i + 1, f, n))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()

    failed = [x for x in results if not x[2]]
    say(f"{len(results) - len(failed)} of {len(results)} scenario runs passed")
    for f, title, ok, took in sorted(results, key=lambda x: (x[1], x[0])):
        print(f"  {'ok  ' if ok else 'FAIL'} {f:17} scenario {title} ({took:.0f}s)")
    if bench:
        print("figures: " + json.dumps(bench, sort_keys=True))
        if args.bench_out:
            args.bench_out.write_text(json.dumps(bench, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(r.ssh_dir, ignore_errors=True)
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

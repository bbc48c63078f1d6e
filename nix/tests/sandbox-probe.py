#!/usr/bin/env python3
"""Runs the real `fabric agent` and `fabric bootstrap` inside the file-system
sandbox that nix/module.nix gives their units, to show that the hardening
leaves them everything a converge run needs.

The sandbox is read from the units as the module renders them (through the
stand-in evaluation, nix/tests/eval-standin.nix) and rebuilt with bubblewrap,
since systemd as PID 1 cannot exist here:

  ProtectSystem=strict, ProtectHome=read-only  ->  / bound read-only
  PrivateTmp=yes                               ->  fresh /tmp and /var/tmp
  PrivateDevices=yes                           ->  a minimal /dev
  ReadWritePaths=, StateDirectory=,
  CacheDirectory=                              ->  writable binds (of scratch
                                                   directories, so the host's
                                                   own state is never touched)
  Environment=, WorkingDirectory=              ->  the same

Inside it, fabric runs a whole converge against a local Git flake whose
toplevel is a tiny derivation: `git ls-remote`, `nix build` through a real
nix-daemon (NIX_REMOTE=daemon), `nix-env --set` on the system profile,
switch-to-configuration (run directly: there is no systemd here, which is
also why the transient `systemd-run` unit, PID 1's namespace restrictions and
seccomp are not covered), a health check, the state files and the bootstrap
marker. A negative control runs the agent without the profile's
ReadWritePaths= and must fail.

Usage: nix/tests/sandbox-probe.py [FABRIC_BINARY]   (as root, from the
repository root; needs bwrap, nix-daemon, nix-instantiate and git)
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

OFFLINE = "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false"
DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket"

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"sandbox-probe: {name}: failed{': ' + detail if detail else ''}", file=sys.stderr)


def units():
    out = subprocess.run(
        ["nix-instantiate", "--readonly-mode", "--eval", "--strict", "--json",
         "nix/tests/eval-standin.nix", "-A", "units"],
        check=True, capture_output=True, text=True, env={**os.environ, "NIX_CONFIG": OFFLINE},
    ).stdout
    u = json.loads(out)
    return u["bootstrap"]["fabric-bootstrap"], u["agent"]["fabric-agent"]


def as_list(v):
    return v if isinstance(v, list) else [v]


def sandbox_argv(unit, scratch, visible, drop_rw=()):
    """bwrap arguments for `unit`'s sandbox; writable paths map to scratch
    dirs, and `visible` host paths (the test flake, the binary) stay
    readable even where PrivateTmp= would hide them."""
    sc = unit["serviceConfig"]
    assert sc["ProtectSystem"] == "strict", sc["ProtectSystem"]
    assert sc["ProtectHome"] == "read-only", sc["ProtectHome"]
    argv = ["bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc"]
    if sc.get("PrivateDevices"):
        argv += ["--dev", "/dev"]
    if sc.get("PrivateTmp"):
        argv += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    writable = [p for p in as_list(sc.get("ReadWritePaths", [])) if p not in drop_rw]
    writable += ["/var/lib/" + d for d in as_list(sc.get("StateDirectory", []))]
    writable += ["/var/cache/" + d for d in as_list(sc.get("CacheDirectory", []))]
    # Parents before children, so a state directory inside a writable
    # /var/lib stays its own bind.
    for path in sorted(writable, key=len):
        host = os.path.join(scratch, path.strip("/").replace("/", "__"))
        os.makedirs(host, exist_ok=True)
        for child in writable:
            if child.startswith(path + "/"):
                os.makedirs(os.path.join(host, os.path.relpath(child, path)), exist_ok=True)
        argv += ["--bind", host, path]
    for path in visible:
        argv += ["--ro-bind", path, path]
    for key, value in unit.get("environment", {}).items():
        argv += ["--setenv", key, value]
    if "WorkingDirectory" in sc:
        argv += ["--chdir", sc["WorkingDirectory"]]
    return argv, writable


def mountpoints(writable, created):
    """bwrap binds onto a read-only /: the mount points must already exist."""
    for path in writable:
        if not os.path.exists(path):
            os.makedirs(path)
            created.append(path)


def daemon_up():
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(DAEMON_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=fabric-probe", "-c", "user.email=probe@fabric.invalid",
                    *args], check=True, capture_output=True)


FLAKE = r'''{
  outputs = { self }: {
    nixosConfigurations.probe.config.system.build.toplevel = derivation {
      name = "nixos-system-probe-REV";
      system = "SYSTEM";
      builder = "/bin/sh";
      args = [ "-c" ''
        export PATH=/usr/bin:/bin
        mkdir -p $out/bin
        printf '#!/bin/sh\necho "switch-to-configuration $*"\n' > $out/bin/switch-to-configuration
        chmod +x $out/bin/switch-to-configuration
      '' ];
    };
  };
}
'''


def main():
    fabric = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/fabric")
    for tool in ["bwrap", "nix-daemon", "git"]:
        if not shutil.which(tool):
            sys.exit(f"sandbox-probe: {tool} not found")
    if not os.access(fabric, os.X_OK):
        sys.exit(f"sandbox-probe: {fabric} not found; build it first (cargo build -p fabric)")
    if os.geteuid() != 0:
        sys.exit("sandbox-probe: must run as root, like the units")

    bootstrap_unit, agent_unit = units()
    work = tempfile.mkdtemp(prefix="fabric-sandbox-probe-")
    created = []
    daemon = None
    socket_existed = os.path.exists(DAEMON_SOCKET)
    env = {**os.environ, "NIX_CONFIG": OFFLINE}
    try:
        if not daemon_up():
            daemon = subprocess.Popen(["nix-daemon"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            for _ in range(100):
                if daemon_up():
                    break
                time.sleep(0.05)

        # Flakes evaluate purely: no builtins.currentSystem there.
        system = json.loads(subprocess.run(
            ["nix-instantiate", "--eval", "--json", "-E", "builtins.currentSystem"],
            check=True, capture_output=True, text=True, env=env).stdout)
        fleet = os.path.join(work, "fleet")
        os.makedirs(fleet)
        subprocess.run(["git", "init", "-q", "-b", "main", fleet], check=True)
        with open(os.path.join(fleet, "flake.nix"), "w") as f:
            f.write(FLAKE.replace("REV", "1").replace("SYSTEM", system))
        git(fleet, "add", "flake.nix")
        git(fleet, "commit", "-qm", "probe")
        flake = f"git+file://{fleet}?ref=main#probe"
        target = os.path.join(work, "nix-flake-target")
        with open(target, "w") as f:
            f.write(flake + "\n")
        os.chmod(target, 0o644)

        def run(unit, args, drop_rw=(), scratch_name="scratch"):
            scratch = os.path.join(work, scratch_name)
            argv, writable = sandbox_argv(unit, scratch, [fleet, target, fabric], drop_rw)
            mountpoints(writable, created)
            return subprocess.run(argv + ["--", fabric] + args, env=env, capture_output=True, text=True), scratch

        def profile_link(scratch):
            d = os.path.join(scratch, "nix__var__nix__profiles")
            return os.readlink(os.path.join(d, "system")) if os.path.islink(os.path.join(d, "system")) else None

        agent_args = ["agent", "--once", "--flake", flake, "--no-metrics",
                      "--health-check", "sh -c 'test -w /tmp && test ! -w /etc'"]

        # Negative control first: without the profile writable, the run fails.
        r, _ = run(agent_unit, agent_args, drop_rw=("/nix/var/nix/profiles",), scratch_name="control")
        check("control: the agent fails without ReadWritePaths=/nix/var/nix/profiles",
              r.returncode != 0 and "set-profile" in r.stderr and "Read-only file system" in r.stderr,
              f"exit {r.returncode}\n{r.stdout}{r.stderr}")

        r, scratch = run(agent_unit, agent_args, scratch_name="agent")
        check("agent: a whole cycle succeeds in its sandbox", r.returncode == 0,
              f"exit {r.returncode}\n{r.stdout}{r.stderr}")
        check("agent: it switched", r.stdout.startswith("switched: "), r.stdout)
        check("agent: the system profile was set",
              (profile_link(scratch) or "") == "system-1-link", str(profile_link(scratch)))
        check("agent: its state was written",
              os.path.isfile(os.path.join(scratch, "var__lib__fabric", "agent.json")))
        check("agent: Nix's cache went to the cache directory",
              os.path.isdir(os.path.join(scratch, "var__cache__fabric", "nix")))

        r, scratch = run(bootstrap_unit, ["bootstrap", "--timeout", "1m", "--flake-target", target],
                         scratch_name="bootstrap")
        check("bootstrap: succeeds in its sandbox", r.returncode == 0,
              f"exit {r.returncode}\n{r.stdout}{r.stderr}")
        check("bootstrap: the marker was written",
              os.path.isfile(os.path.join(scratch, "var__lib", "nixos-bootstrap-complete")))
        check("bootstrap: its state was written",
              os.path.isfile(os.path.join(scratch, "var__lib__fabric", "bootstrap.json")))
        r, _ = run(bootstrap_unit, ["bootstrap", "--timeout", "1m", "--flake-target", target],
                   scratch_name="bootstrap")
        check("bootstrap: a second run finds the marker",
              r.returncode == 0 and "already complete" in r.stdout, f"{r.stdout}{r.stderr}")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
            if not socket_existed and os.path.exists(DAEMON_SOCKET):
                os.unlink(DAEMON_SOCKET)
        for path in reversed(created):
            try:
                os.rmdir(path)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)

    print(f"sandbox-probe: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

//! The first-boot bootstrap hook: a cloud-init per-boot script that makes
//! systemd run `fabric bootstrap` once the network is online.
//!
//! Why a per-boot script and not `runcmd` plus a unit in `write_files`:
//! `runcmd` and `write_files` run once per instance, but bootstrap must be
//! retried on every boot until it has succeeded. And NixOS's
//! `/etc/systemd/system` is a read-only link into the Nix store, where a
//! `write_files` entry would fail and abort every later entry. So the
//! script (kept on `/var`, which persists) runs at every boot and, unless
//! bootstrap is complete, starts the unit: the template's own unit when its
//! NixOS module provides one, else a runtime unit it writes to
//! `/run/systemd/system`, the one unit directory NixOS leaves writable.
//!
//! The only input in the script is the Fabric flake, and it appears once,
//! single-quoted for the shell. The runtime unit is constant text: its
//! `ExecStart` calls this same script with `run`, so no user input ever
//! passes through systemd's own quoting, `%` specifiers or `$` expansion.

use crate::{BOOTSTRAP_MARKER, BOOTSTRAP_UNIT, FLAKE_TARGET, PER_BOOT_SCRIPT, RUNTIME_UNIT_DIR};

/// Quotes `s` as one word for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The runtime unit written when the template has none. Exit status 2 is
/// `fabric bootstrap`'s "bad input" (a refused flake target file); retrying
/// cannot fix that, so it stops the restarts until someone starts the unit
/// again. `StartLimitIntervalSec=0` keeps the retries from ever hitting
/// systemd's start limit: a machine that waits an hour for its Git remote
/// must still converge. The delay grows from 30 s to 15 min
/// (`RestartSteps`, systemd 254+, which NixOS has; older systemd ignores the
/// keys and keeps 30 s), so a flake whose build fails fast is not rebuilt
/// every 30 s forever. A one-shot unit has no start timeout by default,
/// which a first `nix build` needs.
pub(crate) fn runtime_unit() -> String {
    format!(
        "[Unit]
Description=Fabric first-boot bootstrap (runtime unit written by cloud-init)
After=network-online.target cloud-final.service
Wants=network-online.target
ConditionPathExists={FLAKE_TARGET}
ConditionPathExists=!{BOOTSTRAP_MARKER}
StartLimitIntervalSec=0

[Service]
Type=oneshot
Environment=HOME=/root
ExecStart=/bin/sh {PER_BOOT_SCRIPT} run
Restart=on-failure
RestartSec=30s
RestartSteps=5
RestartMaxDelaySec=15min
RestartPreventExitStatus=2
"
    )
}

/// The per-boot script. `fabric_flake` must already be validated; it is
/// quoted here regardless.
pub(crate) fn per_boot_script(fabric_flake: &str) -> String {
    let flake = shell_quote(fabric_flake);
    let unit_text = runtime_unit();
    format!(
        r#"#!/bin/sh
# Fabric first-boot bootstrap, rendered by `fabric render`.
#
# cloud-init runs this script at every boot (scripts-per-boot). Until
# {BOOTSTRAP_MARKER} exists it starts {BOOTSTRAP_UNIT}, which runs
# `fabric bootstrap` after network-online.target. `{PER_BOOT_SCRIPT} run`
# is that unit's command when the template does not provide the unit.
set -u

unit={BOOTSTRAP_UNIT}
marker={BOOTSTRAP_MARKER}
fabric_flake={flake}
PATH=/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:${{PATH:-/usr/bin:/bin}}
export PATH

if [ "${{1-}}" = run ]; then
  # Prefer the fabric the template installed; else fetch it from the flake.
  if command -v fabric >/dev/null 2>&1; then
    exec fabric bootstrap
  fi
  exec nix --extra-experimental-features 'nix-command flakes' run "$fabric_flake" -- bootstrap
fi

if [ -e "$marker" ]; then
  echo "fabric-bootstrap: $marker exists, bootstrap is complete"
  exit 0
fi
if [ ! -d {RUNTIME_UNIT_DIR} ]; then
  echo "fabric-bootstrap: systemd is not running, $unit not started"
  exit 0
fi
if ! systemctl cat "$unit" >/dev/null 2>&1; then
  # /run is gone at the next boot, when this script writes the unit again.
  tmp={RUNTIME_UNIT_DIR}/.$unit.tmp
  cat > "$tmp" <<'FABRIC_UNIT'
{unit_text}FABRIC_UNIT
  mv -f "$tmp" {RUNTIME_UNIT_DIR}/"$unit"
  systemctl daemon-reload
fi
echo "fabric-bootstrap: starting $unit"
exec systemctl start --no-block "$unit"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$x&y;`z`"), "'$x&y;`z`'");
    }

    #[test]
    fn script_names_the_contract_paths() {
        let s = per_boot_script("github:kubelize/fabric");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("fabric_flake='github:kubelize/fabric'\n"));
        assert!(s.contains("unit=fabric-bootstrap.service\n"));
        assert!(s.contains("marker=/var/lib/nixos-bootstrap-complete\n"));
        assert!(s.contains("ConditionPathExists=/etc/nix-flake-target\n"));
        assert!(s.contains("ConditionPathExists=!/var/lib/nixos-bootstrap-complete\n"));
        assert!(
            s.contains("ExecStart=/bin/sh /var/lib/cloud/scripts/per-boot/fabric-bootstrap run\n")
        );
        assert!(s.contains("systemctl start --no-block"));
        // The heredoc terminator must sit alone on its line.
        assert!(s.contains("\nFABRIC_UNIT\n"));
    }

    /// Every place the script writes (redirections and `mv` targets) is
    /// /dev/null or the runtime unit directory.
    #[test]
    fn writes_only_to_the_runtime_unit_directory() {
        let s = per_boot_script("github:kubelize/fabric");
        let tmp = s
            .lines()
            .find_map(|l| l.trim().strip_prefix("tmp="))
            .unwrap()
            .to_string();
        let mut targets = Vec::new();
        for line in s.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            // Only lines of the script itself, not of the unit it writes.
            if let Some((_, rest)) = line.split_once('>') {
                targets.push(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            if let Some(rest) = line.strip_prefix("mv -f ") {
                targets.push(rest.split_whitespace().nth(1).unwrap_or("").to_string());
            }
        }
        assert_eq!(targets.len(), 4, "{targets:?}");
        for t in targets {
            let t = t.replace("\"$tmp\"", &tmp).replace('"', "");
            assert!(
                t.starts_with("/dev/null")
                    || t.starts_with("&1")
                    || t.starts_with("/run/systemd/system/"),
                "writes to {t}"
            );
        }
    }
}

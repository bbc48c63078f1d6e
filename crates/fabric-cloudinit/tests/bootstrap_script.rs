//! The rendered per-boot bootstrap script, run for real by `sh`.
//!
//! Each run happens in a private mount namespace (`unshare --mount`) with
//! fresh tmpfs over `/run`, `/var/lib` and `/nix`, so the script's absolute
//! paths (the marker, `/run/systemd/system`) can be set up per case without
//! touching the host. systemd as PID 1 cannot exist here, so `systemctl`,
//! `fabric` and `nix` are thin fakes on PATH that record their arguments;
//! the unit file the script writes is then checked by the real
//! `systemd-analyze verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fabric_cloudinit::{render_user_data, RenderOptions, BOOTSTRAP_UNIT, PER_BOOT_SCRIPT};
use proptest::prelude::*;

struct Outcome {
    status: i32,
    stdout: String,
    /// One line per fake command run: `name arg|arg|...`.
    calls: Vec<String>,
    /// The unit file the script left in /run/systemd/system, if any.
    unit: Option<String>,
    /// Other files left in /run/systemd/system.
    leftovers: Vec<String>,
}

/// The script as rendered into user-data for `fabric_flake`.
fn script(fabric_flake: &str) -> String {
    let m = machine(BY_NAME);
    let opts = RenderOptions {
        fabric_flake: fabric_flake.to_string(),
    };
    let ud = render_user_data(&m, None, &opts).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(ud.trim_start_matches("#cloud-config\n")).unwrap();
    let file = body["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == PER_BOOT_SCRIPT)
        .expect("the per-boot script is in write_files");
    assert_eq!(file["permissions"], "0755");
    file["content"].as_str().unwrap().to_string()
}

const FAKE: &str = r#"#!/bin/sh
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf ' %s|' "$a"; done; echo; } >> "$FAKE_LOG"
if [ "$(basename "$0")" = systemctl ] && [ "${1-}" = cat ]; then
  [ "${FAKE_UNIT_KNOWN-}" = 1 ] && exit 0
  exit 1
fi
exit 0
"#;

/// Builds the fake bin directory; `fabric` is left out unless asked for.
fn fake_bin(dir: &Path, with_fabric: bool) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut names = vec!["systemctl", "nix"];
    if with_fabric {
        names.push("fabric");
    }
    for name in names {
        let p = bin.join(name);
        std::fs::write(&p, FAKE).unwrap();
        Command::new("chmod").arg("755").arg(&p).status().unwrap();
    }
    bin
}

struct Case<'a> {
    flake: &'a str,
    args: &'a [&'a str],
    systemd: bool,
    marker: bool,
    unit_known: bool,
    fabric_installed: bool,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            flake: fabric_cloudinit::DEFAULT_FABRIC_FLAKE,
            args: &[],
            systemd: true,
            marker: false,
            unit_known: false,
            fabric_installed: false,
        }
    }
}

fn run(case: &Case) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = fake_bin(dir, case.fabric_installed);
    let script_path = dir.join("fabric-bootstrap");
    std::fs::write(&script_path, script(case.flake)).unwrap();
    let log = dir.join("calls.log");
    std::fs::write(&log, "").unwrap();
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();

    let mut setup = String::from(
        "set -e; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /var/lib; \
         if [ -d /nix ]; then mount -t tmpfs tmpfs /nix; fi; ",
    );
    if case.systemd {
        setup.push_str("mkdir -p /run/systemd/system; ");
    }
    if case.marker {
        setup.push_str("touch /var/lib/nixos-bootstrap-complete; ");
    }
    // The script runs with the namespace's mounts; what it leaves in
    // /run/systemd/system is copied out before the namespace goes away.
    let inner = format!(
        "{setup} set +e; sh \"$SCRIPT\" \"$@\"; rc=$?; \
         if [ -d /run/systemd/system ]; then cp -a /run/systemd/system/. \"$OUT/\"; fi; exit $rc"
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &inner,
            "sh",
        ])
        .args(case.args)
        .env("SCRIPT", &script_path)
        .env("OUT", &out_dir)
        .env("FAKE_LOG", &log)
        .env("FAKE_UNIT_KNOWN", if case.unit_known { "1" } else { "0" })
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("unshare:") && !stderr.contains("mount:"),
        "namespace setup failed: {stderr}"
    );
    let mut unit = None;
    let mut leftovers = Vec::new();
    for e in std::fs::read_dir(&out_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == BOOTSTRAP_UNIT {
            unit = Some(std::fs::read_to_string(e.path()).unwrap());
        } else {
            leftovers.push(name);
        }
    }
    Outcome {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        calls: std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
        unit,
        leftovers,
    }
}

/// Whether this environment can run the cases; fails (or skips) otherwise.
fn available(test: &str) -> bool {
    if !is_root() {
        oracle_unavailable(
            test,
            "root",
            "private mount namespaces need root; run as root (CI does)",
        );
        return false;
    }
    if !have("unshare") {
        oracle_unavailable(test, "unshare", "apt-get install util-linux");
        return false;
    }
    true
}

#[test]
fn does_nothing_once_bootstrap_is_complete() {
    if !available("does_nothing_once_bootstrap_is_complete") {
        return;
    }
    let o = run(&Case {
        marker: true,
        ..Case::default()
    });
    assert_eq!(o.status, 0, "{}", o.stdout);
    assert!(o.stdout.contains("bootstrap is complete"), "{}", o.stdout);
    assert!(o.calls.is_empty(), "{:?}", o.calls);
    assert!(o.unit.is_none());
}

#[test]
fn exits_quietly_without_systemd() {
    if !available("exits_quietly_without_systemd") {
        return;
    }
    let o = run(&Case {
        systemd: false,
        ..Case::default()
    });
    assert_eq!(o.status, 0);
    assert!(o.stdout.contains("systemd is not running"), "{}", o.stdout);
    assert!(o.calls.is_empty(), "{:?}", o.calls);
}

#[test]
fn starts_the_templates_unit_when_it_has_one() {
    if !available("starts_the_templates_unit_when_it_has_one") {
        return;
    }
    let o = run(&Case {
        unit_known: true,
        ..Case::default()
    });
    assert_eq!(o.status, 0, "{}", o.stdout);
    assert_eq!(
        calls(&o),
        [
            "systemctl cat fabric-bootstrap.service",
            "systemctl start --no-block fabric-bootstrap.service",
        ]
    );
    assert!(
        o.unit.is_none(),
        "wrote a unit although the template has one"
    );
}

/// The fake logs `name arg1| arg2|`; tests write calls as `name arg1 arg2`.
fn normalise(s: &str) -> String {
    s.replace('|', "")
}

fn calls(o: &Outcome) -> Vec<String> {
    o.calls.iter().map(|c| normalise(c)).collect()
}

#[test]
fn writes_a_runtime_unit_when_the_template_has_none() {
    if !available("writes_a_runtime_unit_when_the_template_has_none") {
        return;
    }
    let o = run(&Case::default());
    assert_eq!(o.status, 0, "{}", o.stdout);
    assert_eq!(
        calls(&o),
        [
            "systemctl cat fabric-bootstrap.service",
            "systemctl daemon-reload",
            "systemctl start --no-block fabric-bootstrap.service",
        ]
    );
    assert!(
        o.leftovers.is_empty(),
        "temporary files left: {:?}",
        o.leftovers
    );
    let unit = o.unit.expect("the runtime unit was written");
    for line in [
        "After=network-online.target cloud-final.service",
        "Wants=network-online.target",
        "ConditionPathExists=/etc/nix-flake-target",
        "ConditionPathExists=!/var/lib/nixos-bootstrap-complete",
        "Type=oneshot",
        "Restart=on-failure",
        "RestartSec=30s",
        "RestartSteps=5",
        "RestartMaxDelaySec=15min",
        "ExecStart=/bin/sh /var/lib/cloud/scripts/per-boot/fabric-bootstrap run",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}:\n{unit}");
    }
    verify_unit(&unit);
}

/// `systemd-analyze verify`: systemd's own parser on the unit text.
fn verify_unit(unit: &str) {
    if !have("systemd-analyze") {
        return oracle_unavailable("verify_unit", "systemd-analyze", "apt-get install systemd");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(BOOTSTRAP_UNIT);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    // Units named in After=/Wants= that this host lacks (cloud-final) are
    // reported but are no fault of the file; anything else is.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("cloud-final.service") && !l.contains("network-online.target"))
        // The back-off keys are systemd 254+ (NixOS has them); this host's
        // older systemd only says it does not know them.
        .filter(|l| {
            !(l.contains("Unknown key")
                && (l.contains("RestartSteps") || l.contains("RestartMaxDelaySec")))
        })
        .collect();
    assert!(
        out.status.success() || problems.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
}

#[test]
fn run_prefers_the_installed_fabric() {
    if !available("run_prefers_the_installed_fabric") {
        return;
    }
    let o = run(&Case {
        args: &["run"],
        fabric_installed: true,
        ..Case::default()
    });
    assert_eq!(o.status, 0, "{}", o.stdout);
    assert_eq!(calls(&o), ["fabric bootstrap"]);
}

#[test]
fn run_falls_back_to_nix_run_of_the_fabric_flake() {
    if !available("run_falls_back_to_nix_run_of_the_fabric_flake") {
        return;
    }
    let flake = "git+https://example.org/it's/$HOME/`id`/fabric?ref=a&dir=b";
    let o = run(&Case {
        args: &["run"],
        flake,
        ..Case::default()
    });
    assert_eq!(o.status, 0, "{}", o.stdout);
    assert_eq!(
        o.calls,
        [format!(
            "nix --extra-experimental-features| nix-command flakes| run| {flake}| --| bootstrap|"
        )]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever flake passes validation reaches `nix run` as one argument,
    /// unchanged: the shell quoting cannot be broken out of.
    #[test]
    fn any_valid_fabric_flake_reaches_nix_intact(
        path in r#"[a-zA-Z0-9._~!$&'()*+,;=:@%/-]{1,40}"#,
        query in proptest::option::of(r#"ref=[a-zA-Z0-9._/'$`&!-]{1,20}"#),
    ) {
        let flake = match &query {
            Some(q) => format!("git+https://example.org/{path}?{q}"),
            None => format!("git+https://example.org/{path}"),
        };
        prop_assume!(fabric_cloudinit::check_fabric_flake(&flake).is_ok());
        if !is_root() || !have("unshare") {
            // Reported by the non-property tests above.
            return Ok(());
        }
        let o = run(&Case { args: &["run"], flake: &flake, ..Case::default() });
        prop_assert_eq!(o.status, 0);
        prop_assert_eq!(
            o.calls,
            vec![format!("nix --extra-experimental-features| nix-command flakes| run| {flake}| --| bootstrap|")]
        );
    }
}

//! The rendered files against cloud-init's own schemas: the installed
//! `cloud-init schema` (Debian 12's 22.4) for user-data, and the project's
//! `oracles/check-cloud-config` (cloud-init 26.2's schemas from Debian's
//! package, PyYAML, deprecations, `to: default`, `gateway4/6`) for
//! user-data, network-config and meta-data.

mod common;

use std::process::Command;

use common::*;

#[test]
fn cloud_init_schema_accepts_user_data() {
    let test = "cloud_init_schema_accepts_user_data";
    if !have("cloud-init") {
        return oracle_unavailable(test, "cloud-init", "apt-get install cloud-init");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, seed) in fixture_seeds() {
        let path = tmp.path().join(format!("{name}.user-data"));
        std::fs::write(&path, &seed.user_data).unwrap();
        // 22.4 spells it -c/--config-file; later releases keep the long form.
        let out = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .expect("run cloud-init schema");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{name}: cloud-init schema failed:\n{text}"
        );
        assert!(text.contains("Valid cloud-config"), "{name}: {text}");
        assert!(
            !text.to_lowercase().contains("deprecat"),
            "{name}: deprecated keys:\n{text}"
        );
    }
}

#[test]
fn check_cloud_config_accepts_every_seed() {
    let test = "check_cloud_config_accepts_every_seed";
    let tool = oracle_tool("check-cloud-config");
    if !tool.exists() {
        return oracle_unavailable(
            test,
            &tool.display().to_string(),
            "it is part of the repository (oracles/); FABRIC_SHARED_TOOLS, if set, must name a directory that has it",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut with_network = 0;
    for (name, _, seed) in fixture_seeds() {
        let dir = tmp.path().join(name);
        write_seed(&dir, &seed);
        with_network += usize::from(seed.network_config.is_some());
        let out = Command::new(&tool)
            .arg(&dir)
            .output()
            .expect("run check-cloud-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{name}: check-cloud-config failed:\n{text}"
        );
        assert!(text.contains("valid user-data"), "{name}: {text}");
        if seed.network_config.is_some() {
            assert!(text.contains("valid network-config"), "{name}: {text}");
        }
    }
    assert_eq!(
        with_network, 3,
        "the static fixtures (two, and the private-fleet SSH example) carry a network-config"
    );
}

/// The checker must catch what it is here to catch, or its passing above
/// proves nothing: what YAML 1.1 coerces (an unquoted hostname `no`, a MAC
/// address, an `instance-id` like `12:30`), deprecated and unknown keys, a
/// `to: default` route and `gateway4`. Each is refused with its place.
#[test]
fn check_cloud_config_refuses_yaml_traps() {
    let test = "check_cloud_config_refuses_yaml_traps";
    let tool = oracle_tool("check-cloud-config");
    if !tool.exists() {
        return oracle_unavailable(
            test,
            &tool.display().to_string(),
            "it is part of the repository (oracles/)",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("user-data", "#cloud-config\nhostname: no\n", ":2:1: hostname: False is not of type 'string'"),
        (
            "user-data",
            "#cloud-config\nusers:\n  - name: a\n    lock-passwd: true\n",
            ":4:5: users.0.lock-passwd: deprecated",
        ),
        ("user-data", "#cloud-config\nhostnam: web\n", "'hostnam' was unexpected"),
        ("user-data", "hostname: web\n", ":1:1: the first line must be exactly '#cloud-config'"),
        (
            "network-config",
            "{\"version\": 2, \"ethernets\": {\"e\": {\"routes\": [{\"to\": \"default\", \"via\": \"10.0.0.1\"}]}}}\n",
            "ethernets.e.routes.0.to: 'default' needs cloud-init 25.3",
        ),
        (
            "network-config",
            "version: 2\nethernets:\n  e:\n    gateway4: 10.0.0.1\n",
            ":4:5: ethernets.e.gateway4: deprecated",
        ),
        (
            "network-config",
            "version: 2\nethernets:\n  e:\n    match:\n      macaddress: 52:54:00:12:34:56\n",
            "ethernets.e.match.macaddress: 41135085296 is not of type 'string'",
        ),
        ("meta-data", "instance-id: 12:30\n", ":1:1: instance-id: must be a string"),
    ];
    for (i, (kind, text, want)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("{i}-{kind}"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&tool)
            .arg(format!("--{kind}"))
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{kind} {text:?} must be refused:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("INVALID {kind}")) && stdout.contains(want),
            "{kind} {text:?}: want {want:?} in:\n{stdout}"
        );
    }
}

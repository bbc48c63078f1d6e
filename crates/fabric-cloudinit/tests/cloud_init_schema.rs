//! The rendered files against cloud-init's own schemas: the installed
//! `cloud-init schema` (Debian 12's 22.4) for user-data, and
//! `../shared/tools/check-cloud-config` (cloud-init 26.2 schemas, PyYAML,
//! deprecations, `to: default`, `gateway4/6`) for user-data and
//! network-config.

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
    let tool = shared_tools().join("check-cloud-config");
    if !tool.exists() {
        return oracle_unavailable(
            test,
            "../shared/tools/check-cloud-config",
            "check out the shared tools next to the repository, or set FABRIC_SHARED_TOOLS",
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
        with_network, 2,
        "both static fixtures carry a network-config"
    );
}

/// The checker must catch what it is here to catch, or its passing above
/// proves nothing: an unquoted hostname `no` and a `to: default` route.
#[test]
fn check_cloud_config_refuses_yaml_traps() {
    let test = "check_cloud_config_refuses_yaml_traps";
    let tool = shared_tools().join("check-cloud-config");
    if !tool.exists() {
        return oracle_unavailable(
            test,
            "../shared/tools/check-cloud-config",
            "check out the shared tools",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let ud = tmp.path().join("user-data");
    std::fs::write(&ud, "#cloud-config\nhostname: no\n").unwrap();
    let out = Command::new(&tool)
        .arg("--user-data")
        .arg(&ud)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let nc = tmp.path().join("network-config");
    std::fs::write(
        &nc,
        "{\"version\": 2, \"ethernets\": {\"e\": {\"routes\": [{\"to\": \"default\", \"via\": \"10.0.0.1\"}]}}}\n",
    )
    .unwrap();
    let out = Command::new(&tool)
        .arg("--network-config")
        .arg(&nc)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

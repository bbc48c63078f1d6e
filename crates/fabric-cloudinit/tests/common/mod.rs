//! Shared by the oracle tests: fixtures, seed directories and the rule for
//! tools that are not installed.
//!
//! An oracle test never passes silently without its oracle: a missing tool
//! (or missing root) fails the test with a message saying what to install,
//! unless `FABRIC_SKIP_ORACLES=1` is set, in which case the test prints that
//! it was skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use fabric_cloudinit::{render, render_with, RenderOptions, SecretData, Seed};
use fabric_model::{credential, secret, source, AuthorizedKey, Machine};

pub const TRAPS: &str = include_str!("../fixtures/yaml11-traps.yaml");
pub const BY_NAME: &str = include_str!("../fixtures/static-by-name.yaml");
pub const DHCP_SECRET: &str = include_str!("../fixtures/dhcp-secret.yaml");
pub const SECRET: &str = include_str!("../fixtures/admin-keys-secret.yaml");
/// The private-fleet examples: a deploy key over SSH, a token for GitHub.
pub const PRIVATE_FLEET: [(&str, &str, &str); 2] = [
    (
        "private-fleet-ssh",
        include_str!("../../../../examples/private-fleet/db01.yaml"),
        include_str!("../../../../examples/private-fleet/db01-deploy-key.yaml"),
    ),
    (
        "private-fleet-token",
        include_str!("../../../../examples/private-fleet/web02.yaml"),
        include_str!("../../../../examples/private-fleet/web02-token.yaml"),
    ),
];

/// The credential a private-fleet example's Secret holds.
pub fn credential_of(m: &Machine, secret_text: &str) -> credential::Credential {
    let docs = source::parse_yaml(secret_text).unwrap();
    match credential::for_machine(&docs, m) {
        Ok(Some(c)) => c,
        other => panic!("credential fixture: {other:?}"),
    }
}

pub fn machine(text: &str) -> Machine {
    match Machine::from_yaml(text) {
        Ok(m) => m,
        Err(d) => panic!("fixture is invalid: {d:?}"),
    }
}

pub fn secret_keys() -> Vec<AuthorizedKey> {
    match secret::keys_from_yaml(SECRET, "admin-keys", "authorized_keys") {
        Ok(k) => k,
        Err(d) => panic!("secret fixture is invalid: {d:?}"),
    }
}

/// Every fixture rendered with default options, by name.
pub fn fixture_seeds() -> Vec<(&'static str, Machine, Seed)> {
    let keys = secret_keys();
    [
        ("yaml11-traps", TRAPS),
        ("static-by-name", BY_NAME),
        ("dhcp-secret", DHCP_SECRET),
    ]
    .into_iter()
    .map(|(name, text)| {
        let m = machine(text);
        let seed = render(&m, Some(&keys), &RenderOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        (name, m, seed)
    })
    .chain(PRIVATE_FLEET.iter().map(|(name, text, secret_text)| {
        let m = machine(text);
        let c = credential_of(&m, secret_text);
        let seed = render_with(
            &m,
            &SecretData {
                ssh_keys: None,
                credential: Some(&c),
            },
            &RenderOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        (*name, m, seed)
    }))
    .collect()
}

/// Writes the seed's files into `dir`, as `fabric render --dir` does.
pub fn write_seed(dir: &Path, seed: &Seed) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in seed.files() {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Called when an oracle is unavailable. Returns normally (so the test can
/// return) only when `FABRIC_SKIP_ORACLES=1`; otherwise fails the test.
pub fn oracle_unavailable(test: &str, what: &str, fix: &str) {
    if std::env::var("FABRIC_SKIP_ORACLES").as_deref() == Ok("1") {
        // Written to the process's stderr directly: libtest captures
        // eprintln! of passing tests, and a skip must be visible.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {what} is not available (FABRIC_SKIP_ORACLES=1)"
        );
        return;
    }
    panic!("{test} needs {what}: {fix}. Set FABRIC_SKIP_ORACLES=1 to skip oracle tests.");
}

/// Whether `program` can be run (found on PATH).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/fabric-cloudinit -> repository root.
    manifest
        .parent()
        .and_then(Path::parent)
        .expect("crate lives in <repo>/crates/<name>")
        .to_path_buf()
}

/// One of the project's own oracles in `oracles/` (`cloud-init-run`,
/// `check-cloud-config`, `cloud-init-schemas`). `FABRIC_SHARED_TOOLS` names
/// a directory of same-named tools to use instead, such as a checkout of
/// the shared tools; nothing needs it.
pub fn oracle_tool(name: &str) -> PathBuf {
    std::env::var_os("FABRIC_SHARED_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("oracles"))
        .join(name)
}

/// The directory of cloud-init's JSON schemas: `FABRIC_CLOUD_INIT_SCHEMAS`,
/// or the one `oracles/cloud-init-schemas` fetches from Debian's cloud-init
/// package (once; it is cached by version).
pub fn cloud_init_schemas() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FABRIC_CLOUD_INIT_SCHEMAS") {
        return Ok(PathBuf::from(dir));
    }
    let tool = repo_root().join("oracles/cloud-init-schemas");
    let out = Command::new(&tool)
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if dir.join("schema-cloud-config-v1.json").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "{} printed {}, which holds no schema-cloud-config-v1.json",
            tool.display(),
            dir.display()
        ))
    }
}

/// A Python 3 with PyYAML: a venv under `FABRIC_ORACLE_CACHE` (or
/// `~/.cache/fabric-oracles`) if one exists, else the system Python
/// (Debian's cloud-init uses that one's PyYAML).
pub fn python_with_yaml() -> Option<PathBuf> {
    let cache = std::env::var_os("FABRIC_ORACLE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fabric-oracles"))
        });
    let mut candidates = Vec::new();
    if let Some(c) = cache {
        candidates.push(c.join("venv/bin/python3"));
    }
    candidates.push(PathBuf::from("/usr/bin/python3"));
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

//! One minimum Rust version: the workspace's `rust-version`, what the
//! README tells users, and what nix/package.nix says it needs are the same
//! number, and no locked dependency needs a newer one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `1.89` or `1.89.0` as comparable numbers.
fn version(s: &str) -> Vec<u32> {
    let mut v: Vec<u32> = s
        .split('.')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("{s:?} is not a version"))
        })
        .collect();
    v.resize(3, 0);
    v
}

/// Every "Rust 1.NN" in the text, with the line it is on.
fn mentions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("Rust ") {
            rest = &rest[at + 5..];
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let num = num.trim_end_matches('.').to_string();
            if num.starts_with("1.") {
                out.push((num, line.to_string()));
            }
        }
    }
    out
}

#[test]
fn one_minimum_rust_version_everywhere() {
    let cargo_toml = read("Cargo.toml");
    let declared = cargo_toml
        .lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("rust-version")?.trim();
            Some(v.strip_prefix('=')?.trim().trim_matches('"').to_string())
        })
        .expect("Cargo.toml's [workspace.package] has a rust-version");

    for file in ["README.md", "nix/package.nix", "DEVELOPERS.md"] {
        let found = mentions(&read(file));
        if file != "DEVELOPERS.md" {
            assert!(
                !found.is_empty(),
                "{file} no longer says which Rust it needs"
            );
        }
        for (num, line) in found {
            assert_eq!(
                version(&num),
                version(&declared),
                "{file} says Rust {num}, Cargo.toml's rust-version is {declared}: {line}"
            );
        }
    }

    // The lock's dependencies for this host, as cargo itself reads their
    // manifests (other platforms' crates need not be downloaded).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let newest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((version(v), format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .expect("some package declares a rust-version");
    assert!(
        newest.0 <= version(&declared),
        "{} needs Rust {:?}, newer than Cargo.toml's rust-version {declared}",
        newest.1,
        newest.0
    );
}

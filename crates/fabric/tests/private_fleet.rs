//! A private fleet through the CLI: `render`, `seed`, `compose` and
//! `validate` take the credential Secret as they take the keys Secret, and
//! none of them prints the key or a token, on success or on any error.

use std::process::Output;

mod fabric_binary;
use fabric_binary::{fabric, repo, text};

const DB01: &str = "examples/private-fleet/db01.yaml";
const DB01_KEY: &str = "examples/private-fleet/db01-deploy-key.yaml";
const WEB02: &str = "examples/private-fleet/web02.yaml";
const WEB02_TOKEN: &str = "examples/private-fleet/web02-token.yaml";
const TOKEN: &str = "github_pat_FAKE0example0token0not0a0real0secret";

/// The body lines of the example's fake deploy key.
fn key_lines() -> Vec<String> {
    std::fs::read_to_string(repo().join(DB01_KEY))
        .unwrap()
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::to_string)
        .collect()
}

fn assert_quiet(out: &Output, what: &str) {
    let err = text(&out.stderr);
    for secret in key_lines().iter().map(String::as_str).chain([TOKEN]) {
        assert!(
            !err.contains(secret),
            "{what}: stderr carries a secret:\n{err}"
        );
    }
}

fn user_data_files(user_data: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value =
        serde_json::from_str(user_data.trim_start_matches("#cloud-config\n")).unwrap();
    body["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .starts_with("/etc/fabric/credentials/")
        })
        .cloned()
        .collect()
}

#[test]
fn render_delivers_each_kind_as_root_only_files() {
    let out = fabric(&["render", DB01, "--secret", DB01_KEY]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_quiet(&out, "render db01");
    let files = user_data_files(&text(&out.stdout));
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/etc/fabric/credentials/ssh-key",
            "/etc/fabric/credentials/known_hosts"
        ]
    );
    assert!(files
        .iter()
        .all(|f| f["permissions"] == "0600" && f["owner"] == "root:root"));
    assert!(files[0]["content"]
        .as_str()
        .unwrap()
        .contains(&key_lines()[0]));

    let out = fabric(&["render", WEB02, "--secret", WEB02_TOKEN]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = user_data_files(&text(&out.stdout));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "/etc/fabric/credentials/access-tokens");
    assert_eq!(files[0]["content"], format!("github.com={TOKEN}\n"));
}

#[test]
fn render_without_the_secret_or_with_the_wrong_one_says_which_is_needed() {
    let out = fabric(&["render", DB01]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("spec.nix.credentialsSecretRef") && err.contains("--secret"),
        "{err}"
    );

    let out = fabric(&["render", DB01, "--secret", WEB02_TOKEN]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(WEB02_TOKEN) && err.contains("fleet/fleet-deploy-key"),
        "{err}"
    );
    assert_quiet(&out, "wrong secret");
}

#[test]
fn a_refused_credential_names_file_line_column_and_field_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let text_of = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    // The host pinned is not the reference's.
    let bad_key = dir.path().join("bad-key.yaml");
    let key = text_of(DB01_KEY).replace(
        "    git.example.org ssh-ed25519",
        "    other.example.net ssh-ed25519",
    );
    std::fs::write(&bad_key, &key).unwrap();
    let line = key
        .lines()
        .position(|l| l.starts_with("  known_hosts:"))
        .unwrap()
        + 2;
    let out = fabric(&["render", DB01, "--secret", bad_key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:{line}:5: stringData.known_hosts: no line pins git.example.org",
            bad_key.display()
        )),
        "{err}"
    );
    assert_quiet(&out, "bad known_hosts");
    // A token for another host, with a scheme.
    let bad_token = dir.path().join("bad-token.yaml");
    std::fs::write(
        &bad_token,
        text_of(WEB02_TOKEN).replace("github.com=", "https://github.com="),
    )
    .unwrap();
    let out = fabric(&[
        "seed",
        WEB02,
        "--secret",
        bad_token.to_str().unwrap(),
        "--iso",
        dir.path().join("s.iso").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("stringData.access-tokens: entry 1 names the host with a https:// prefix"),
        "{err}"
    );
    assert_quiet(&out, "bad token");
    assert!(!dir.path().join("s.iso").exists());
}

#[test]
fn seed_takes_the_credential_and_both_secrets_when_the_machine_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let machine = dir.path().join("db01.yaml");
    let text = std::fs::read_to_string(repo().join(DB01)).unwrap().replace(
        "  bootstrap:\n    adminUser: ops\n",
        "  bootstrap:\n    adminUser: ops\n    sshAuthorizedKeysSecretRef: {name: admin-keys}\n",
    );
    std::fs::write(&machine, text).unwrap();
    let keys = dir.path().join("keys.yaml");
    std::fs::write(
        &keys,
        std::fs::read_to_string(repo().join("example/secret.yaml"))
            .unwrap()
            .replace("namespace: default", "namespace: fleet"),
    )
    .unwrap();
    let iso = dir.path().join("db01.iso");
    let m = machine.to_str().unwrap();
    let out = fabric(&[
        "seed",
        m,
        "--secret",
        keys.to_str().unwrap(),
        "--secret",
        DB01_KEY,
        "--iso",
        iso.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", self::text(&out.stderr));
    assert_quiet(&out, "seed");
    let out = fabric(&[
        "render",
        m,
        "--secret",
        DB01_KEY,
        "--secret",
        keys.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", self::text(&out.stderr));
    let ud = self::text(&out.stdout);
    assert!(ud.contains("bob@desk"), "the keys Secret's key");
    assert_eq!(user_data_files(&ud).len(), 2);
    // One Secret missing: the keys.
    let out = fabric(&["render", m, "--secret", DB01_KEY]);
    assert_eq!(out.status.code(), Some(2), "{}", self::text(&out.stderr));
    assert!(self::text(&out.stderr).contains("fleet/admin-keys"));
}

#[test]
fn compose_reads_the_credential_and_prints_it_only_in_the_snippet() {
    for input in [
        "example/composition.yaml",
        "example/composition-terraform.yaml",
    ] {
        let out = fabric(&[
            "compose",
            "example/private-fleet.yaml",
            "--input",
            input,
            "--secret",
            "example/private-fleet-secret.yaml",
        ]);
        assert!(out.status.success(), "{input}: {}", text(&out.stderr));
        assert_quiet(&out, input);
        let composed = text(&out.stdout);
        assert!(
            composed.contains("/etc/fabric/credentials/ssh-key"),
            "{input}"
        );
        // Without it: nothing composed, waiting, and the Secret named.
        let out = fabric(&["compose", "example/private-fleet.yaml", "--input", input]);
        assert!(out.status.success());
        assert!(text(&out.stdout).trim().is_empty());
        assert!(
            text(&out.stderr).contains("default/fleet-deploy-key"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn validate_accepts_the_private_fleet_and_prints_no_secret() {
    for args in [
        vec!["validate", "examples/private-fleet"],
        vec!["validate", "--output", "json", "examples/private-fleet"],
    ] {
        let out = fabric(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for secret in key_lines().iter().map(String::as_str).chain([TOKEN]) {
            assert!(!all.contains(secret), "{args:?}: {all}");
        }
    }
    // An invalid machine beside its Secret: the errors name the machine's
    // field, and the Secret's content stays out.
    let dir = tempfile::tempdir().unwrap();
    let m = std::fs::read_to_string(repo().join(DB01)).unwrap();
    let k = std::fs::read_to_string(repo().join(DB01_KEY)).unwrap();
    std::fs::write(
        dir.path().join("db01.yaml"),
        format!(
            "{}---\n{k}",
            m.replace(
                "git+ssh://git@git.example.org/infra/fleet#db01",
                "https://example.org/f.tar.gz#db01"
            )
        ),
    )
    .unwrap();
    let out = fabric(&["validate", "--output", "json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("spec.nix.credentialsSecretRef"), "{all}");
    for secret in key_lines() {
        assert!(!all.contains(&secret), "{all}");
    }
}

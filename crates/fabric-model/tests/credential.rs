//! The credential Secret of `spec.nix.credentialsSecretRef`: what is
//! accepted, what is refused and how, and that no message ever carries the
//! key or a token.

use fabric_model::credential::{self, Credential, CredentialError, ReferenceHost};
use fabric_model::source::parse_yaml;
use fabric_model::{Diagnostic, FlakeRef, Machine};
use proptest::prelude::*;

const DB01: &str = include_str!("../../../examples/private-fleet/db01.yaml");
const DEPLOY_KEY: &str = include_str!("../../../examples/private-fleet/db01-deploy-key.yaml");
const WEB02: &str = include_str!("../../../examples/private-fleet/web02.yaml");
const TOKEN: &str = include_str!("../../../examples/private-fleet/web02-token.yaml");

/// The fake deploy key of the example, as its lines.
fn key_pem() -> String {
    let start = DEPLOY_KEY.find("-----BEGIN").unwrap();
    let end = DEPLOY_KEY.find("PRIVATE KEY-----\n  known").unwrap() + "PRIVATE KEY-----".len();
    DEPLOY_KEY[start..end]
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBOSEInxwhHUf3qJqasGfGZ+5z3dMDhN9C9fzn8kY4A9";
/// A key made with `ssh-keygen -t ed25519 -N pass`: encrypted, and fake.
const ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBedZZvAD
eC1yv72yeS9FfYAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIOwXhob0asEpsAGg
g5Th4pA19v7t1RxbAjl7kyU3JRhsAAAAkBBAm6M+WnSOLjNh/9MEgTjDkam9DsCFHkEIgo
LsSzYj+utWB7oA6Xy782h05YTZ+km8Fa+wKewm++gU2UEFpTkIULVXI21l7OQZAmSYGQsG
RoRKpF2DuZKuYvF1zYUUt054m9BzU3B9IgUinbPr4ITAsYtSc8DrpyVV2eQirszv3DA6ZV
nFny/1gB0eTlv6LA==
-----END OPENSSH PRIVATE KEY-----
";

fn flake(s: &str) -> FlakeRef {
    FlakeRef::parse(s).unwrap()
}

/// A Secret with `data` as given, each value base64-encoded.
fn secret(entries: &[(&str, &str)]) -> fabric_model::source::Node {
    use base64::Engine;
    let mut text = String::from("apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\ndata:\n");
    for (k, v) in entries {
        let b = base64::engine::general_purpose::STANDARD.encode(v);
        text.push_str(&format!("  {k}: {b}\n"));
    }
    parse_yaml(&text).unwrap().remove(0)
}

fn refused(entries: &[(&str, &str)], reference: &str) -> Vec<Diagnostic> {
    let diags = credential::from_secret(&secret(entries), &flake(reference)).unwrap_err();
    let text: String = diags.iter().map(|d| format!("{d}\n")).collect();
    for (_, v) in entries {
        for line in v.lines().filter(|l| l.len() > 12) {
            assert!(!text.contains(line), "a message repeats the secret: {text}");
        }
    }
    diags
}

fn one(diags: &[Diagnostic]) -> String {
    assert_eq!(diags.len(), 1, "{diags:?}");
    diags[0].to_string()
}

#[test]
fn the_example_deploy_key_is_read_with_its_fingerprint_and_host() {
    let machine = Machine::from_yaml(DB01).unwrap();
    let docs = parse_yaml(DEPLOY_KEY).unwrap();
    let c = credential::for_machine(&docs, &machine).unwrap().unwrap();
    assert_eq!(c.kind(), "ssh-key");
    assert_eq!(c.host(), "git.example.org");
    assert_eq!(
        c.fingerprint(),
        Some("SHA256:LUZ8q0po2JCjSnJCDMuvdW2GIAY6jUJ0hjgEPycV7YE")
    );
    let Credential::SshKey(k) = &c else { panic!() };
    assert_eq!(k.private_key(), key_pem());
    assert_eq!(k.known_hosts(), format!("git.example.org {HOST_KEY}\n"));
    // Debug, which a careless log line would use, shows neither.
    let debug = format!("{c:?} {k:?}");
    assert!(!debug.contains("b3BlbnNzaC1rZXktdjE"), "{debug}");
    assert!(debug.contains("SHA256:LUZ8q0po"), "{debug}");
}

#[test]
fn the_example_token_is_read_for_github() {
    let machine = Machine::from_yaml(WEB02).unwrap();
    let docs = parse_yaml(TOKEN).unwrap();
    let c = credential::for_machine(&docs, &machine).unwrap().unwrap();
    assert_eq!(
        (c.kind(), c.host(), c.fingerprint()),
        ("access-token", "github.com", None)
    );
    let Credential::AccessTokens(t) = &c else {
        panic!()
    };
    assert_eq!(
        t.file_content(),
        "github.com=github_pat_FAKE0example0token0not0a0real0secret\n"
    );
    assert!(!format!("{c:?}").contains("github_pat"));
}

#[test]
fn a_secret_of_another_namespace_is_not_the_machines() {
    let machine = Machine::from_yaml(DB01).unwrap();
    let elsewhere = DEPLOY_KEY.replace("namespace: fleet", "namespace: other");
    let docs = parse_yaml(&elsewhere).unwrap();
    match credential::for_machine(&docs, &machine) {
        Err(CredentialError::NotInFile(d)) => {
            assert!(d.to_string().contains("fleet/fleet-deploy-key"), "{d}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_without_a_pinned_host_is_refused() {
    let d = refused(
        &[("ssh-privatekey", &key_pem())],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    );
    let msg = one(&d);
    assert!(msg.starts_with("data.known_hosts: "), "{msg}");
    assert!(msg.contains("ssh-keyscan git.example.org"), "{msg}");
}

#[test]
fn known_hosts_must_name_the_references_host_and_port() {
    let other = format!("forge.example.net {HOST_KEY}\n");
    let msg = one(&refused(
        &[("ssh-privatekey", &key_pem()), ("known_hosts", &other)],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    ));
    assert!(msg.contains("no line pins git.example.org"), "{msg}");
    // A port other than 22 is pinned as [host]:port, as ssh looks it up.
    let plain = format!("git.example.org {HOST_KEY}\n");
    let msg = one(&refused(
        &[("ssh-privatekey", &key_pem()), ("known_hosts", &plain)],
        "git+ssh://git@git.example.org:2222/infra/fleet#db01",
    ));
    assert!(msg.contains("[git.example.org]:2222"), "{msg}");
    assert!(msg.contains("ssh-keyscan -p 2222 git.example.org"), "{msg}");
    let bracketed = format!("[git.example.org]:2222 {HOST_KEY}\n");
    let c = credential::from_secret(
        &secret(&[("ssh-privatekey", &key_pem()), ("known_hosts", &bracketed)]),
        &flake("git+ssh://git@git.example.org:2222/infra/fleet#db01"),
    )
    .unwrap();
    assert_eq!(c.host(), "[git.example.org]:2222");
    // A revoked line pins nothing.
    let revoked = format!("@revoked git.example.org {HOST_KEY}\n");
    refused(
        &[("ssh-privatekey", &key_pem()), ("known_hosts", &revoked)],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    );
}

#[test]
fn hashed_lines_do_not_pin_the_host_and_globs_do() {
    // Written by `ssh-keygen -H` from `git.example.org KEY`. Bootstrap
    // refuses such a file on the machine (it cannot tell which host a hash
    // pins), so the Machine is refused here first, saying why.
    let hashed =
        format!("|1|XYdkTloqOOpXmIPUPON7dOJ7r0M=|gnv3Ir6GrWWsG28P/ilVjDRIiDM= {HOST_KEY}\n");
    let r = "git+ssh://git@git.example.org/infra/fleet#db01";
    let msg = one(&refused(
        &[("ssh-privatekey", &key_pem()), ("known_hosts", &hashed)],
        r,
    ));
    assert!(msg.contains("1 hashed line(s) cannot be checked"), "{msg}");
    assert!(msg.contains("without -H"), "{msg}");
    let ok = |kh: &str| {
        credential::from_secret(
            &secret(&[("ssh-privatekey", &key_pem()), ("known_hosts", kh)]),
            &flake(r),
        )
    };
    // Beside a line in clear, a hashed one is harmless.
    ok(&format!("{hashed}git.example.org {HOST_KEY}\n")).unwrap();
    ok(&format!("*.example.org {HOST_KEY}\n")).unwrap();
    assert!(ok(&format!("*.example.org,!git.example.org {HOST_KEY}\n")).is_err());
}

#[test]
fn a_key_with_windows_line_endings_is_given_to_the_machine_with_unix_ones() {
    let crlf = key_pem().replace('\n', "\r\n");
    let kh = format!("git.example.org {HOST_KEY}\r\n");
    let c = credential::from_secret(
        &secret(&[("ssh-privatekey", &crlf), ("known_hosts", &kh)]),
        &flake("git+ssh://git@git.example.org/infra/fleet#db01"),
    )
    .unwrap();
    let Credential::SshKey(k) = c else { panic!() };
    assert_eq!(k.private_key(), key_pem());
    assert!(!k.known_hosts().contains('\r'));
}

#[test]
fn an_encrypted_key_a_pem_key_and_a_public_key_are_refused_clearly() {
    let kh = format!("git.example.org {HOST_KEY}\n");
    let r = "git+ssh://git@git.example.org/infra/fleet#db01";
    let msg = one(&refused(
        &[("ssh-privatekey", ENCRYPTED), ("known_hosts", &kh)],
        r,
    ));
    assert!(msg.contains("encrypted with a passphrase"), "{msg}");
    assert!(msg.contains("ssh-keygen -p -N ''"), "{msg}");
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfakefakefake\n-----END RSA PRIVATE KEY-----\n";
    let msg = one(&refused(
        &[("ssh-privatekey", pem), ("known_hosts", &kh)],
        r,
    ));
    assert!(msg.contains("PEM private key, not OpenSSH"), "{msg}");
    let msg = one(&refused(
        &[("ssh-privatekey", HOST_KEY), ("known_hosts", &kh)],
        r,
    ));
    assert!(msg.contains("is a public key"), "{msg}");
}

#[test]
fn a_kind_that_does_not_fit_the_scheme_is_refused() {
    let kh = format!("git.example.org {HOST_KEY}\n");
    let msg = one(&refused(
        &[("ssh-privatekey", &key_pem()), ("known_hosts", &kh)],
        "git+https://git.example.org/infra/fleet#db01",
    ));
    assert!(
        msg.starts_with("data.ssh-privatekey: an SSH key is for git+ssh://"),
        "{msg}"
    );
    assert!(msg.contains("git.example.org=<token>"), "{msg}");
    let msg = one(&refused(
        &[("access-tokens", "git.example.org=abcdefghijklmnopq")],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    ));
    assert!(
        msg.starts_with("data.access-tokens: access tokens are for HTTPS"),
        "{msg}"
    );
}

#[test]
fn both_kinds_or_neither_are_refused() {
    let kh = format!("git.example.org {HOST_KEY}\n");
    let msg = one(&refused(
        &[
            ("ssh-privatekey", &key_pem()),
            ("known_hosts", &kh),
            ("access-tokens", "git.example.org=abcdefghijklmnopq"),
        ],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    ));
    assert!(msg.contains("both an SSH key"), "{msg}");
    let msg = one(&refused(&[("authorized_keys", "x")], "github:org/fleet#a"));
    assert!(
        msg.starts_with("data: the Secret holds no credential"),
        "{msg}"
    );
    let msg = one(&refused(
        &[("known_hosts", &kh)],
        "git+ssh://git@git.example.org/infra/fleet#db01",
    ));
    assert!(msg.contains("known_hosts but no ssh-privatekey"), "{msg}");
}

#[test]
fn a_token_for_another_host_or_with_a_scheme_is_refused_without_echoing_it() {
    let msg = one(&refused(
        &[("access-tokens", "gitlab.com=glpat-abcdefghijklmnop")],
        "github:org/fleet#web",
    ));
    assert!(
        msg.contains("entry 1 is for gitlab.com, but spec.nix.flakeRef fetches from github.com"),
        "{msg}"
    );
    assert!(msg.contains("github.com=<token>"), "{msg}");
    let msg = one(&refused(
        &[("access-tokens", "https://github.com=ghp_abcdefghijklmnop")],
        "github:org/fleet#web",
    ));
    assert!(msg.contains("https:// prefix"), "{msg}");
    let msg = one(&refused(
        &[("access-tokens", "ghp_abcdefghijklmnop")],
        "github:org/fleet#web",
    ));
    assert!(msg.contains("no '='"), "{msg}");
    // gitlab: is gitlab.com; git+https with a port names host:port.
    credential::from_secret(
        &secret(&[("access-tokens", "gitlab.com=PAT:glpat-abcdefghijklmnop")]),
        &flake("gitlab:org/fleet#web"),
    )
    .unwrap();
    let c = credential::from_secret(
        &secret(&[("access-tokens", "git.example.org:8443=abcdefghijklmnop\n")]),
        &flake("git+https://git.example.org:8443/infra/fleet#web"),
    )
    .unwrap();
    assert_eq!(c.host(), "git.example.org:8443");
}

#[test]
fn errors_in_a_file_name_line_and_column() {
    let bad = DEPLOY_KEY.replace(
        "  known_hosts: |\n    git.example.org",
        "  known_hosts: |\n    forge.example.net",
    );
    let machine = Machine::from_yaml(DB01).unwrap();
    let docs = parse_yaml(&bad).unwrap();
    let Err(CredentialError::Invalid(d)) = credential::for_machine(&docs, &machine) else {
        panic!()
    };
    // A block scalar's position is its first content line, after the key's.
    let line = bad
        .lines()
        .position(|l| l.starts_with("  known_hosts:"))
        .unwrap() as u32
        + 2;
    let located = d[0].located("db01-deploy-key.yaml");
    assert!(
        located.starts_with(&format!("db01-deploy-key.yaml:{line}:")),
        "{located}"
    );
    assert!(
        located.contains("stringData.known_hosts: no line pins git.example.org"),
        "{located}"
    );
}

#[test]
fn the_machine_field_is_checked_against_the_reference() {
    let with = |flake_ref: &str, name: &str| {
        DB01.replace("git+ssh://git@git.example.org/infra/fleet#db01", flake_ref)
            .replace("name: fleet-deploy-key", &format!("name: {name}"))
    };
    let d = Machine::from_yaml(&with("https://example.org/fleet.tar.gz#db01", "ok")).unwrap_err();
    let msg = one(&d);
    assert!(msg.starts_with("spec.nix.credentialsSecretRef: "), "{msg}");
    let d = Machine::from_yaml(&with(
        "git+ssh://git@git.example.org/infra/fleet#db01",
        "Not_A_Name",
    ))
    .unwrap_err();
    assert!(one(&d).starts_with("spec.nix.credentialsSecretRef.name: "));
    let m = Machine::from_yaml(DB01).unwrap();
    assert_eq!(m.credentials_secret.unwrap().name, "fleet-deploy-key");
    assert_eq!(
        ReferenceHost::of(&m.flake).unwrap(),
        ReferenceHost::Ssh {
            host: "git.example.org".into(),
            port: 22
        }
    );
}

proptest! {
    /// Whatever the token, a refusal never repeats it, and an accepted one
    /// is written exactly once, on its host's line.
    #[test]
    fn a_token_never_appears_in_a_message(token in "[A-Za-z0-9_:.-]{8,60}", host in "(github\\.com|gitlab\\.com|evil\\.example)") {
        let entry = format!("{host}={token}");
        match credential::from_secret(&secret(&[("access-tokens", &entry)]), &flake("github:org/fleet#a")) {
            Ok(Credential::AccessTokens(t)) => {
                prop_assert_eq!(host.as_str(), "github.com");
                prop_assert_eq!(t.file_content(), format!("github.com={token}\n"));
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(diags) => {
                for d in diags {
                    prop_assert!(!d.to_string().contains(&token), "{}", d);
                }
            }
        }
    }
}

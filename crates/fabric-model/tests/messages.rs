//! One problem, one line: every diagnostic a battery of broken machines
//! produces renders without a line break, so `FILE:LINE:COL: path: what
//! (hint)` can be read by editors, CI annotations and grep.

use fabric_model::{machine::parse_stream, Diagnostic, FlakeRef, Parsed};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

fn valid() -> String {
    format!(
        "apiVersion: infra.kubelize.io/v1alpha1
kind: Machine
metadata:
  name: dns01
  namespace: lab
  labels: {{team: infra}}
spec:
  hostname: dns01
  domain: homelab.local
  cpu:
    cores: 2
    sockets: 1
  memory:
    size: 4096
  disk:
    size: 32
  image: nixos-template
  network:
    dhcp: false
    interface: ens18
    macAddress: 52:54:00:12:34:56
    ip: 10.0.1.10
    cidr: 24
    gateway: 10.0.1.1
    dns:
      - 10.0.1.1
    searchDomains:
      - homelab.local
    ipv6:
      address: fd00::10
      prefix: 64
      gateway: fd00::1
  proxmox:
    node: pve1
    storage: local-zfs
    bridge: vmbr0
    vlan: 20
  nix:
    flakeRef: git+https://github.com/org/fleet#dns01
  bootstrap:
    adminUser: ops
    sshAuthorizedKeys:
      - {KEY}
    sshAuthorizedKeysSecretRef:
      name: keys
      key: authorized_keys
  tags:
    role: dns
"
    )
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    parse_stream(text)
        .into_iter()
        .flat_map(|p| match p {
            Parsed::Machine(m) => m.warnings,
            Parsed::Invalid(d) => d,
            Parsed::NotAMachine { .. } => Vec::new(),
        })
        .collect()
}

fn is_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Each line deleted, and each value replaced by values of every wrong
/// shape, including strings that hold line breaks.
fn battery() -> Vec<String> {
    let base = valid();
    let lines: Vec<&str> = base.lines().collect();
    let replacements = [
        "\"two\\nlines\"",
        "\"cr\\rhere\"",
        "\"\\u2028sep\"",
        "[a, b]",
        "{a: b}",
        "-1",
        "99999999999",
        "\"\"",
        "~",
        "Nope",
        "|\n      block\n      text",
    ];
    let mut out = Vec::new();
    for i in 0..lines.len() {
        let mut deleted = lines.clone();
        deleted.remove(i);
        out.push(deleted.join("\n"));
        let Some((key, _)) = lines[i].split_once(": ") else {
            continue;
        };
        for r in replacements {
            let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            changed[i] = format!("{key}: {r}");
            out.push(changed.join("\n"));
        }
        let mut renamed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        renamed[i] = lines[i].replacen(key.trim_start(), "\"bad\\nkey\"", 1);
        out.push(renamed.join("\n"));
    }
    out
}

#[test]
fn the_fixture_is_valid() {
    assert!(
        diagnostics(&valid()).iter().all(|d| !d.is_error()),
        "{:?}",
        diagnostics(&valid())
    );
}

#[test]
fn every_rendered_problem_is_one_line() {
    let mut seen = 0;
    for text in battery() {
        for d in diagnostics(&text) {
            seen += 1;
            let line = d.located("m.yaml");
            assert!(!line.contains(is_break), "{line:?}\nfrom:\n{text}");
        }
    }
    assert!(seen > 300, "the battery produced only {seen} diagnostics");
}

#[test]
fn the_required_hostname_hint_is_one_line() {
    let text = valid().replace("  hostname: dns01\n", "");
    let d = diagnostics(&text);
    let hostname = d
        .iter()
        .find(|d| d.path == "spec.hostname")
        .expect("hostname is required");
    let hint = hostname.hint.as_deref().unwrap_or_default();
    assert!(!hint.contains(is_break), "{hint:?}");
    assert_eq!(
        hint,
        "add hostname, the host name of the machine: an RFC 1123 label (lowercase letters, digits and '-', at most 63 characters)"
    );
}

#[test]
fn flake_reference_problems_are_one_line() {
    for r in [
        "",
        "git+https://github.com/o/r",
        "git+https://user:tok@github.com/o/r#h",
        "gitlab:o@x/r#h",
        "https://example.org/x#h",
        "path:/etc/nixos#h",
        "git+https://github.com/o/r?access_token=x#h",
        "github:o/r/bad..ref#h",
        "git+https://github.com/o/r?ref=a&ref=b#h",
        "git+https://github.com/o/r#nixosConfigurations.h",
    ] {
        let e = FlakeRef::parse(r).unwrap_err();
        assert!(!e.message().contains(is_break), "{r}: {:?}", e.message());
        assert!(!e.hint().contains(is_break), "{r}: {:?}", e.hint());
    }
}

#[test]
fn a_misspelt_required_field_is_one_error_and_hints_are_sentences() {
    let text = valid().replace("  hostname: dns01\n", "  hostnme: dns01\n");
    let d = diagnostics(&text);
    let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        lines,
        ["spec.hostnme: unknown field (did you mean hostname? hostname is required, and missing)"],
        "{lines:#?}"
    );
    let text = valid().replace("  image: nixos-template\n", "");
    let d = diagnostics(&text);
    let image = d
        .iter()
        .find(|d| d.path == "spec.image")
        .expect("image is required");
    assert_eq!(
        image.hint.as_deref(),
        Some("add image, the name of the Proxmox NixOS template to clone")
    );
}

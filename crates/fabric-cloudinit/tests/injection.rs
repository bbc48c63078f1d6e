//! No input can change the structure of a rendered file.
//!
//! Machines are generated with arbitrary values in every free-text field
//! that validation lets through: YAML 1.1 keywords as hostnames, domains and
//! user names, any Unicode in SSH key comments, interface names made of
//! every printable ASCII character allowed, flake references with quotes,
//! `$`, `&` and `%`. For each, the rendered files are read back and must
//! equal the intended structure, built here independently with `json!`:
//!
//! - by serde_json, for every generated case (the JSON grammar);
//! - by PyYAML's `safe_load`, which is what cloud-init uses (the YAML 1.1
//!   grammar, where `no` is false and `52:54:00:12:34:56` an integer), for
//!   a batch of generated cases, compared with strict types.

mod common;

use std::process::Command;

use common::*;
use fabric_cloudinit::{render, RenderOptions, Seed};
use fabric_model::Machine;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

/// Words YAML 1.1 resolves to something other than a string when plain,
/// all of them valid DNS labels and POSIX user names.
const YAML_WORDS: &[&str] = &[
    "no", "yes", "on", "off", "y", "n", "true", "false", "null", "nan", "inf", "0", "012", "0x1f",
    "1e3", "0b101", "0o17", "190-20",
];

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK3/ygCEOa9t3J+0kBPrA0vTB6mqLRZBsrWmYSJMoET7";
const ED25519_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmLUAs0BbKFjMOaRHPo/sqBe70JbHvWkt1a46YURZCn";

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(YAML_WORDS).prop_map(str::to_string),
        "[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    (proptest::collection::vec(label(), 1..3), label()).prop_map(|(mut labels, last)| {
        // DNS names may not end in an all-numeric label.
        labels.push(format!("{last}x"));
        labels.join(".")
    })
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &["off", "on", "no", "yes", "y", "n", "true", "null", "nan", "inf"][..]
        )
        .prop_map(str::to_string),
        "[a-z_][a-z0-9_-]{0,15}",
    ]
}

/// Printable ASCII except '/' and ':' (which the model refuses), so every
/// YAML and shell metacharacter: `"`, `\`, `'`, `#`, `{`, `&`, `*`, `|`...
fn interface() -> impl Strategy<Value = String> {
    "[!-.0-9;-~]{1,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

/// Any characters that are not controls, as a key comment may hold.
fn comment() -> impl Strategy<Value = String> {
    "\\PC{1,24}"
}

fn flake() -> impl Strategy<Value = String> {
    (
        r#"[a-zA-Z0-9._~!$&'()*+,;=@%-]{1,16}"#,
        // No '&' here: it would start another query parameter.
        proptest::option::of(r#"[a-zA-Z0-9_'$!-]([a-zA-Z0-9._/'$!-]{0,10}[a-zA-Z0-9_'$!-])?"#),
        "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,10}",
    )
        .prop_map(|(path, r, attr)| match r {
            Some(r) => format!("git+https://example.org/o/{path}?ref={r}#{attr}"),
            None => format!("git+https://example.org/o/{path}#{attr}"),
        })
}

#[derive(Debug, Clone)]
struct Input {
    hostname: String,
    domain: Option<String>,
    user: String,
    comments: [String; 2],
    interface: String,
    mac: Option<[u8; 6]>,
    ip: [u8; 2],
    ipv6: bool,
    search: Vec<String>,
    flake: String,
    fabric_flake: String,
}

fn input() -> impl Strategy<Value = Input> {
    (
        (label(), proptest::option::of(domain()), user()),
        (comment(), comment()),
        (
            interface(),
            proptest::option::of(any::<[u8; 6]>()),
            any::<[u8; 2]>(),
            any::<bool>(),
        ),
        proptest::collection::vec(domain(), 0..3),
        (flake(), flake()),
    )
        .prop_map(
            |(
                (hostname, domain, user),
                (c0, c1),
                (interface, mac, ip, ipv6),
                search,
                (flake, fabric),
            )| Input {
                hostname,
                domain,
                user,
                comments: [c0, c1],
                interface,
                // Locally administered and unicast, so always a valid MAC.
                mac: mac.map(|mut m| {
                    m[0] = (m[0] & 0xfc) | 0x02;
                    m
                }),
                ip,
                ipv6,
                search,
                flake,
                fabric_flake: fabric.split('#').next().unwrap_or_default().to_string(),
            },
        )
}

impl Input {
    fn host_ip(&self) -> String {
        // 10.A.B.x/24 with a host part that is never network or broadcast.
        format!("10.{}.{}.{}", self.ip[0], self.ip[1], 10)
    }

    fn keys(&self) -> [String; 2] {
        [
            format!("{ED25519} {}", self.comments[0]),
            format!("{ED25519_B} {}", self.comments[1]),
        ]
    }

    fn mac_text(&self) -> Option<String> {
        self.mac.map(|m| {
            m.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
    }

    fn manifest(&self) -> Value {
        let mut network = json!({
            "dhcp": false,
            "interface": self.interface,
            "ip": self.host_ip(),
            "cidr": 24,
            "gateway": format!("10.{}.{}.1", self.ip[0], self.ip[1]),
            "dns": ["10.0.0.53", "2001:db8::53"],
        });
        if !self.search.is_empty() {
            network["searchDomains"] = json!(self.search);
        }
        if let Some(mac) = self.mac_text() {
            network["macAddress"] = json!(mac);
        }
        if self.ipv6 {
            network["ipv6"] = json!({"address": "fd00::10", "prefix": 64, "gateway": "fd00::1"});
        }
        let mut spec = json!({
            "hostname": self.hostname,
            "class": "small",
            "image": "nixos-template",
            "network": network,
            "nix": {"flakeRef": self.flake},
            "bootstrap": {"adminUser": self.user, "sshAuthorizedKeys": self.keys()},
        });
        if let Some(d) = &self.domain {
            spec["domain"] = json!(d);
        }
        json!({
            "apiVersion": "infra.kubelize.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "m1", "namespace": "lab"},
            "spec": spec,
        })
    }

    /// The machine, when validation accepts this input.
    fn machine(&self) -> Option<Machine> {
        Machine::from_json(&self.manifest()).ok()
    }

    fn options(&self) -> RenderOptions {
        RenderOptions {
            fabric_flake: self.fabric_flake.clone(),
        }
    }

    /// What user-data must mean, written from the input alone. Key lines
    /// come from the model's parser, which normalises them (the comment's
    /// surrounding spaces); the parser is not what is under test here.
    fn user_data(&self, m: &Machine, script: &Value) -> Value {
        let mut ud = json!({"hostname": self.hostname});
        if let Some(d) = &self.domain {
            ud["fqdn"] = json!(format!("{}.{d}", self.hostname));
        }
        let keys: Vec<&str> = m.ssh_keys.iter().map(|k| k.openssh()).collect();
        assert_eq!(keys.len(), 2);
        for (line, comment) in keys.iter().zip(&self.comments) {
            assert!(line.ends_with(comment.trim()), "{line:?} lost {comment:?}");
        }
        ud["users"] = json!([{
            "name": self.user,
            "groups": ["wheel"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "lock_passwd": true,
            "shell": "/run/current-system/sw/bin/bash",
            "ssh_authorized_keys": keys,
        }]);
        ud["write_files"] = json!([
            {"path": "/etc/nix-flake-target", "content": format!("{}\n", self.flake), "owner": "root:root", "permissions": "0644"},
            {"path": "/var/lib/cloud/scripts/per-boot/fabric-bootstrap", "content": script, "owner": "root:root", "permissions": "0755"},
        ]);
        ud
    }

    fn network_config(&self) -> Value {
        let mut addresses = vec![format!("{}/24", self.host_ip())];
        let mut routes =
            vec![json!({"to": "0.0.0.0/0", "via": format!("10.{}.{}.1", self.ip[0], self.ip[1])})];
        if self.ipv6 {
            addresses.push("fd00::10/64".into());
            routes.push(json!({"to": "::/0", "via": "fd00::1"}));
        }
        let mut eth = json!({});
        match self.mac_text() {
            Some(mac) => {
                eth["match"] = json!({"macaddress": mac.to_lowercase()});
                eth["set-name"] = json!(self.interface);
            }
            None => eth["match"] = json!({"name": self.interface}),
        }
        eth["dhcp4"] = json!(false);
        eth["dhcp6"] = json!(false);
        eth["addresses"] = json!(addresses);
        eth["routes"] = json!(routes);
        let search = if self.search.is_empty() {
            self.domain.iter().cloned().collect()
        } else {
            self.search.clone()
        };
        let mut ns = json!({"addresses": ["10.0.0.53", "2001:db8::53"]});
        if !search.is_empty() {
            ns["search"] = json!(search);
        }
        eth["nameservers"] = ns;
        json!({"version": 2, "ethernets": {self.interface.clone(): eth}})
    }

    fn meta_data(&self, m: &Machine) -> Value {
        json!({"instance-id": m.instance_id(), "local-hostname": self.hostname})
    }
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(text.trim_start_matches("#cloud-config\n"))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The script is checked on its own (bootstrap_script.rs); here only that
/// it is the one string the flake went into, quoted.
fn script_of(ud: &Value, fabric_flake: &str) -> Value {
    let script = ud["write_files"][1]["content"].clone();
    let text = script.as_str().unwrap_or_default();
    let quoted = format!("fabric_flake='{}'\n", fabric_flake.replace('\'', r"'\''"));
    assert!(text.contains(&quoted), "{quoted:?} not in the script");
    script
}

/// Renders a valid input; `None` when validation refused it.
fn case(input: &Input) -> Option<(Machine, Seed, [Value; 3])> {
    let m = input.machine()?;
    let seed = render(&m, None, &input.options()).ok()?;
    let ud = json_body(&seed.user_data);
    let script = script_of(&ud, &input.fabric_flake);
    let expected = [
        input.user_data(&m, &script),
        input.meta_data(&m),
        input.network_config(),
    ];
    Some((m, seed, expected))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_file_means_exactly_the_input(input in input()) {
        let Some((_, seed, [ud, md, nc])) = case(&input) else {
            prop_assume!(false);
            return Ok(());
        };
        prop_assert!(seed.user_data.starts_with("#cloud-config\n"));
        prop_assert_eq!(json_body(&seed.user_data), ud);
        prop_assert_eq!(json_body(&seed.meta_data), md);
        prop_assert_eq!(json_body(seed.network_config.as_deref().unwrap_or("null")), nc);
    }
}

/// Most generated inputs must be valid, or the property above tests little.
#[test]
fn the_generator_mostly_makes_valid_machines() {
    let mut runner = TestRunner::default();
    let strategy = input();
    let valid = (0..200)
        .filter(|_| {
            let input = strategy.new_tree(&mut runner).unwrap().current();
            case(&input).is_some()
        })
        .count();
    assert!(
        valid >= 150,
        "only {valid} of 200 generated machines were valid"
    );
}

const PYYAML_CHECK: &str = r##"
import json, os, sys, yaml

def same(a, b, path):
    # Strict: YAML 1.1 turning "no" into False or "12:30" into 750 must fail,
    # and Python's True == 1 must not hide it.
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {a!r} is not {type(b).__name__} {b!r}"
    if isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            return f"{path}: keys {list(a.keys())} != {list(b.keys())}"
        for k in a:
            r = same(a[k], b[k], f"{path}.{k}")
            if r: return r
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            r = same(x, y, f"{path}[{i}]")
            if r: return r
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"

root = sys.argv[1]
bad = 0
n = 0
for case in sorted(os.listdir(root)):
    d = os.path.join(root, case)
    for name in ("user-data", "meta-data", "network-config"):
        with open(os.path.join(d, name), "rb") as f:
            text = f.read().decode("utf-8")
        if name == "user-data" and not text.startswith("#cloud-config\n"):
            print(f"{case}/{name}: no #cloud-config line"); bad += 1; continue
        got = yaml.safe_load(text)
        with open(os.path.join(d, name + ".expected.json"), encoding="utf-8") as f:
            want = json.load(f)
        r = same(got, want, name)
        n += 1
        if r:
            print(f"{case}/{r}"); bad += 1
print(f"checked {n} files, {bad} wrong")
sys.exit(1 if bad or n == 0 else 0)
"##;

#[test]
fn pyyaml_reads_generated_machines_as_intended() {
    let test = "pyyaml_reads_generated_machines_as_intended";
    let Some(python) = python_with_yaml() else {
        return oracle_unavailable(
            test,
            "python3 with PyYAML",
            "apt-get install python3-yaml (./test.sh does)",
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::default();
    let strategy = input();
    let mut written = 0;
    // The fixtures first (hostname no, user off, domain yes.lan, comment on,
    // MAC 52:54:00:12:34:56), then generated machines.
    let traps = Input {
        hostname: "no".into(),
        domain: Some("yes.lan".into()),
        user: "off".into(),
        comments: ["on".into(), "12:30".into()],
        interface: "ens18".into(),
        mac: Some([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
        ip: [0, 1],
        ipv6: true,
        search: vec!["on.lan".into()],
        flake: "git+https://github.com/org/fleet?ref=main#no".into(),
        fabric_flake: fabric_cloudinit::DEFAULT_FABRIC_FLAKE.into(),
    };
    let mut inputs = vec![traps];
    while inputs.len() < 300 {
        inputs.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for (i, input) in inputs.iter().enumerate() {
        let Some((_, seed, expected)) = case(input) else {
            assert!(i > 0, "the YAML-trap machine must be valid");
            continue;
        };
        let dir = tmp.path().join(format!("{i:04}"));
        std::fs::create_dir(&dir).unwrap();
        let files = [
            ("user-data", seed.user_data.as_str()),
            ("meta-data", seed.meta_data.as_str()),
            (
                "network-config",
                seed.network_config.as_deref().unwrap_or(""),
            ),
        ];
        for ((name, text), want) in files.iter().zip(&expected) {
            std::fs::write(dir.join(name), text).unwrap();
            // Plain serde_json: no YAML concerns in the expectation.
            std::fs::write(
                dir.join(format!("{name}.expected.json")),
                serde_json::to_string(want).unwrap(),
            )
            .unwrap();
        }
        std::fs::write(dir.join("input.txt"), format!("{input:#?}")).unwrap();
        written += 1;
    }
    assert!(written >= 200, "only {written} valid machines");
    // Every PyYAML here: a cached venv's if there is one, and Debian's, which is the
    // one cloud-init itself imports.
    for python in pythons_with_yaml(python) {
        let out = Command::new(&python)
            .args(["-c", PYYAML_CHECK])
            .arg(tmp.path())
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Keep the cases for a human to look at.
            let kept = tmp.keep();
            panic!(
                "PyYAML ({}) read rendered files differently than intended; cases in {}:\n{stdout}\n{stderr}",
                python.display(),
                kept.display()
            );
        }
        assert!(
            stdout.contains(&format!("checked {} files, 0 wrong", written * 3)),
            "{stdout}"
        );
    }
}

fn pythons_with_yaml(first: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut all = vec![first];
    let debian = std::path::PathBuf::from("/usr/bin/python3");
    let has_yaml = Command::new(&debian)
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_yaml && !all.contains(&debian) {
        all.push(debian);
    }
    all
}

/// The comparison above must be able to fail: plain YAML with the values
/// YAML 1.1 coerces is caught, with Python's `True == 1` not hiding it.
#[test]
fn pyyaml_check_catches_what_yaml_11_coerces() {
    let test = "pyyaml_check_catches_what_yaml_11_coerces";
    let Some(python) = python_with_yaml() else {
        return oracle_unavailable(test, "python3 with PyYAML", "apt-get install python3-yaml");
    };
    for (text, want) in [
        ("#cloud-config\nhostname: no\n", json!({"hostname": "no"})),
        (
            "#cloud-config\nmac: 52:54:00:12:34:56\n",
            json!({"mac": "52:54:00:12:34:56"}),
        ),
        (
            "#cloud-config\nlock_passwd: 1\n",
            json!({"lock_passwd": true}),
        ),
        (
            "#cloud-config\n{\"a\": 1, \"b\": 2}\n",
            json!({"b": 2, "a": 1}),
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("0000");
        std::fs::create_dir(&dir).unwrap();
        for name in ["user-data", "meta-data", "network-config"] {
            let (body, expected) = if name == "user-data" {
                (text.to_string(), want.clone())
            } else {
                (String::new(), Value::Null)
            };
            std::fs::write(dir.join(name), body).unwrap();
            std::fs::write(
                dir.join(format!("{name}.expected.json")),
                serde_json::to_string(&expected).unwrap(),
            )
            .unwrap();
        }
        let out = Command::new(&python)
            .args(["-c", PYYAML_CHECK])
            .arg(tmp.path())
            .output()
            .expect("run python");
        assert!(!out.status.success(), "not caught: {text:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 wrong"));
    }
}

//! For any Machine the model accepts, `render` gives files cloud-init
//! accepts: user-data passes cloud-init's own validator against the newest
//! schema and the installed one (no errors, no deprecations), network-config
//! passes the network config v2 schema, and meta-data reads back with the
//! hostname as a string.
//!
//! The generators aim at what careless users write: hostnames, users and
//! flake attributes YAML 1.1 reads as booleans or numbers (`no`, `on`,
//! `0x1`, `1e3`), key comments with `#`, `: `, quotes and unicode, many
//! keys, IPv6, keys from a Secret. Every generated manifest goes through the
//! real validator first; only the ones it accepts are rendered.
//!
//! The oracle is one long-lived Python process (tests/oracle/cloud_init_schema.py)
//! running Debian's cloud-init package, so hundreds of cases cost one
//! interpreter start. `PROPTEST_CASES` sets the number of cases (256).

mod common;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;
use fabric_cloudinit::{render, RenderOptions};
use fabric_model::{secret, Machine};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value as Json};

struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    fn start() -> Result<Self, String> {
        let python = Path::new("/usr/bin/python3");
        let probe = Command::new(python)
            .args(["-c", "import cloudinit.config.schema, jsonschema, yaml"])
            .output()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        if !probe.status.success() {
            return Err(String::from_utf8_lossy(&probe.stderr).trim().to_string());
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let reference = cloud_init_schemas()?;
        let cloud_config = reference.join("schema-cloud-config-v1.json");
        let network = reference.join("schema-network-config-v2.json");
        for schema in [&cloud_config, &network] {
            if !schema.exists() {
                return Err(format!("{} is missing", schema.display()));
            }
        }
        let mut child = Command::new(python)
            .arg(manifest.join("tests/oracle/cloud_init_schema.py"))
            .arg(&cloud_config)
            .arg(&network)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// What cloud-init has against the seed; empty when it accepts it.
    fn problems(&mut self, seed: &fabric_cloudinit::Seed, hostname: &str) -> Vec<String> {
        let req = json!({
            "user_data": seed.user_data,
            "network_config": seed.network_config,
            "meta_data": seed.meta_data,
            "hostname": hostname,
        });
        writeln!(self.stdin, "{req}").expect("write to the oracle");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the oracle");
        assert!(!line.is_empty(), "the oracle exited (see its stderr above)");
        let answer: Json = serde_json::from_str(&line).expect("the oracle answers JSON");
        answer["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Labels YAML 1.1 (PyYAML) reads as something other than a string, and
/// ordinary ones.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "no", "on", "off", "yes", "y", "n", "true", "false", "null", "nan", "inf",
            "0x1", "0x1f", "1e3", "0o17", "0777", "012", "123", "1-2", "0", "1", "e1",
        ])
        .prop_map(str::to_string),
        2 => "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?",
        1 => "[a-z]([a-z0-9-]{59}[a-z0-9])",
    ]
}

/// POSIX user names, the YAML 1.1 traps among them.
fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "no", "on", "off", "yes", "y", "n", "true", "null", "nan", "inf", "e1", "x0", "admin",
            "ops", "nixos", "a-b", "_svc", "o_o",
        ])
        .prop_map(str::to_string),
        "[a-z_][a-z0-9_-]{0,20}",
    ]
}

fn domain() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        // DNS forbids an all-numeric last label; the model says so.
        (
            prop::collection::vec(label(), 0..3),
            prop::sample::select(vec!["lan", "local", "no", "on", "y", "e1", "x0"])
        )
            .prop_map(|(mut l, tld)| {
                l.push(tld.to_string());
                l.join(".")
            }),
        prop::sample::select(vec!["yes.lan", "on.lan", "homelab.local", "no"])
            .prop_map(str::to_string),
    ])
}

/// The pool every key is drawn from: real keys from the fixtures, and
/// generated Ed25519 keys (any 32 bytes form one) for "many keys".
fn key_body() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK3/ygCEOa9t3J+0kBPrA0vTB6mqLRZBsrWmYSJMoET7",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmLUAs0BbKFjMOaRHPo/sqBe70JbHvWkt1a46YURZCn",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMu4RygDjkvd01mhZb5md0GmsB+BYg7hH/D07CpXQy8mKc1pmdIrloIatqkDSL5cqLaDdqzYlXeHEqPfranuitU=",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCu3r/bzSFErp/LQ3cJsaZvrbivMvUDXYluFYaVwOJR0BAc9FniX6ZtIysOAp57VLPdv4KCFXCFu1z/iK3kZZnic8/LZrn1kcem+f88P6ybEF/V2GdQnV/9zLVXmpvptslEbR2SQ9Oy3OJrRkFfw9axEVlPSSBT1jhYffR6SAKllD4mkRxkT/pVas7lYqtQMPPneapbFPHs3p0eXsbj+L+ehOO3pZro1bTwick/icr0dj9rfH2uVTypDTLCfVnPmAdIZhyfueVspC1MXCi5zjkMd+s2+ZFRIvqjqDxoQC5QP5u2ar5mFj+4zy29P/dI+KdmPiH9DRvbM9AgndjgV3ux",
        ])
        .prop_map(str::to_string),
        any::<[u8; 32]>().prop_map(|k| {
            let mut blob = Vec::new();
            blob.extend_from_slice(&11u32.to_be_bytes());
            blob.extend_from_slice(b"ssh-ed25519");
            blob.extend_from_slice(&32u32.to_be_bytes());
            blob.extend_from_slice(&k);
            format!("ssh-ed25519 {}", base64(&blob))
        }),
    ]
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        out.push_str(&"=".repeat(3 - chunk.len()));
    }
    out
}

/// Key comments as people write them.
fn comment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "alice@laptop", "# not a comment", "a #b", "key: value", "- dash",
            "\"quoted\"", "'single'", "& anchor", "* alias", "!tag", "%percent", "@at",
            "`tick`", "{braces}", "[brackets]", "no", "on", "0x1", "yes: no", "a\\b",
            "ünïcødé 🔑", "café\u{2028}x\u{feff}y", "\u{2029}para", "日本語", "a  two  spaces",
            "--- doc", "... end", "|", ">", "?", "<<: merge",
        ])
        .prop_map(str::to_string),
        1 => "[ -~]{0,40}",
        1 => "\\PC{0,20}",
    ]
}

fn key_line() -> impl Strategy<Value = String> {
    (key_body(), comment()).prop_map(|(k, c)| if c.is_empty() { k } else { format!("{k} {c}") })
}

fn ipv4_network() -> impl Strategy<Value = Json> {
    (
        any::<[u8; 4]>(),
        8u8..=30,
        any::<u32>(),
        prop::collection::vec(dns_server(), 0..4),
        prop::option::of(prop::collection::vec(
            domain().prop_map(|d| d.unwrap_or_else(|| "lan".into())),
            0..4,
        )),
    )
        .prop_map(|(addr, cidr, host, dns, search)| {
            let mask = u32::MAX << (32 - cidr);
            let net = u32::from_be_bytes(addr) & mask;
            let hosts = (!mask) - 1; // without network and broadcast
            let gateway = net + 1;
            let ip = net + 2 + host % (hosts - 1).max(1);
            let dotted = |n: u32| std::net::Ipv4Addr::from(n).to_string();
            let mut n = json!({
                "dhcp": false,
                "interface": "ens18",
                "ip": dotted(ip),
                "cidr": cidr,
                "gateway": dotted(gateway),
                "dns": dns,
            });
            if let Some(search) = search {
                n["searchDomains"] = json!(search);
            }
            n
        })
}

fn dns_server() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<[u16; 8]>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
        Just("1.1.1.1".to_string()),
        Just("2606:4700:4700::1111".to_string()),
    ]
}

fn ipv6() -> impl Strategy<Value = Json> {
    (
        any::<[u16; 3]>(),
        any::<u16>(),
        prop_oneof![Just(64u8), Just(48), Just(56), Just(127), Just(128)],
        any::<bool>(),
    )
        .prop_map(|(p, host, prefix, gw)| {
            let addr = std::net::Ipv6Addr::new(0xfd00, p[0], p[1], p[2], 0, 0, 0, host.max(2));
            let mut v = json!({"address": addr.to_string(), "prefix": prefix});
            if gw && prefix <= 64 {
                v["gateway"] = json!(
                    std::net::Ipv6Addr::new(0xfd00, p[0], p[1], p[2], 0, 0, 0, 1).to_string()
                );
            }
            v
        })
}

fn mac() -> impl Strategy<Value = String> {
    (any::<[u8; 5]>(), any::<bool>()).prop_map(|(b, upper)| {
        let s = format!(
            "52:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4]
        );
        if upper {
            s.to_uppercase()
        } else {
            s
        }
    })
}

fn network() -> impl Strategy<Value = Option<Json>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(json!({"dhcp": true}))),
        1 => prop::option::of(mac()).prop_map(|mac| {
            let mut n = json!({"dhcp": true, "interface": "eth0"});
            if let Some(mac) = mac { n["macAddress"] = json!(mac); }
            Some(n)
        }),
        3 => (ipv4_network(), prop::option::of(mac()), prop::option::of(ipv6()), prop::sample::select(vec!["ens18", "eth0", "enp0s3", "en-p1"]))
            .prop_map(|(mut n, mac, v6, iface)| {
                n["interface"] = json!(iface);
                if let Some(mac) = mac { n["macAddress"] = json!(mac); }
                if let Some(v6) = v6 { n["ipv6"] = v6; }
                Some(n)
            }),
    ]
}

fn flake_ref() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "github:org/fleet",
            "git+https://github.com/org/fleet?ref=main",
            "git+ssh://git@github.com/org/fleet?ref=main&dir=hosts",
            "gitlab:group/fleet/v1",
            "https://example.org/fleet.tar.gz",
        ]),
        label(),
    )
        .prop_map(|(base, attr)| format!("{base}#{attr}"))
}

/// A Machine manifest (JSON, which is YAML) and, when its keys come from a
/// Secret, that Secret's manifest.
#[derive(Debug, Clone)]
struct Case {
    machine: String,
    secret: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            label(),
            domain(),
            prop::option::of(prop::sample::select(vec!["small", "medium", "large"])),
            1u32..=16,
            1u32..=2,
            512u32..=65536,
        ),
        network(),
        flake_ref(),
        user(),
        prop::collection::vec(key_line(), 0..12),
        prop::option::of(prop::collection::vec(key_line(), 1..6)),
        prop::collection::btree_map("[a-z]{1,8}", label(), 0..4),
        prop::option::of(0u16..4095),
    )
        .prop_map(
            |(
                (hostname, domain, class, cores, sockets, memory),
                network,
                flake,
                admin,
                keys,
                secret_keys,
                tags,
                vlan,
            )| {
                let mut keys = keys;
                if keys.is_empty() && secret_keys.is_none() {
                    // Nobody could log in; the model refuses that, so give one.
                    keys.push("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmLUAs0BbKFjMOaRHPo/sqBe70JbHvWkt1a46YURZCn".into());
                }
                let mut spec = json!({
                    "hostname": hostname,
                    "image": "nixos-template",
                    "nix": {"flakeRef": flake},
                    "bootstrap": {"adminUser": admin, "sshAuthorizedKeys": keys},
                    "tags": tags,
                });
                match class {
                    Some(class) => spec["class"] = json!(class),
                    None => {
                        spec["cpu"] = json!({"cores": cores, "sockets": sockets});
                        spec["memory"] = json!({"size": memory});
                    }
                }
                if let Some(domain) = domain {
                    spec["domain"] = json!(domain);
                }
                if let Some(network) = network {
                    spec["network"] = network;
                }
                if let Some(vlan) = vlan {
                    spec["proxmox"] = json!({"vlan": vlan});
                }
                let secret = secret_keys.map(|lines| {
                    spec["bootstrap"]["sshAuthorizedKeysSecretRef"] =
                        json!({"name": "admin-keys", "key": "authorized_keys"});
                    // A file as people keep one: a comment line, a blank line.
                    let text = format!("# the team's keys\n\n{}\n", lines.join("\n"));
                    json!({
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "admin-keys"},
                        "stringData": {"authorized_keys": text},
                    })
                    .to_string()
                });
                let machine = json!({
                    "apiVersion": "infra.kubelize.io/v1alpha1",
                    "kind": "Machine",
                    "metadata": {"name": "m1", "namespace": "lab"},
                    "spec": spec,
                });
                Case {
                    machine: machine.to_string(),
                    secret,
                }
            },
        )
}

#[test]
fn render_gives_seeds_cloud_init_accepts() {
    let test = "render_gives_seeds_cloud_init_accepts";
    let oracle = match Oracle::start() {
        Ok(o) => RefCell::new(o),
        Err(why) => {
            return oracle_unavailable(
                test,
                &format!("Debian's cloud-init Python package and cloud-init's schemas ({why})"),
                "apt-get install cloud-init (./test.sh does); oracles/cloud-init-schemas fetches the schemas from Debian",
            )
        }
    };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        // Invalid manifests are rejected, not rendered; the generators keep
        // them rare, and this bound says so.
        max_global_rejects: cases * 2,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = RefCell::new(0u32);
    let rejected = RefCell::new(Vec::<String>::new());
    let with_network = RefCell::new(0u32);
    let result = runner.run(&case(), |case| {
        let machine = match Machine::from_yaml(&case.machine) {
            Ok(m) => m,
            Err(d) => {
                rejected.borrow_mut().push(d[0].to_string());
                return Err(TestCaseError::reject("the model refuses this manifest"));
            }
        };
        let keys = match &case.secret {
            Some(text) => match secret::keys_from_yaml(text, "admin-keys", "authorized_keys") {
                Ok(k) => Some(k),
                Err(d) => {
                    rejected.borrow_mut().push(d[0].to_string());
                    return Err(TestCaseError::reject("the model refuses this Secret"));
                }
            },
            None => None,
        };
        let seed = match render(&machine, keys.as_deref(), &RenderOptions::default()) {
            Ok(seed) => seed,
            // A valid machine with no key at all (none inline, no Secret)
            // is refused by render itself, with its own message.
            Err(fabric_cloudinit::RenderError::NoKeys) => {
                rejected.borrow_mut().push("no keys".into());
                return Err(TestCaseError::reject("no keys"));
            }
            Err(e) => return Err(TestCaseError::fail(format!("render failed: {e}"))),
        };
        *accepted.borrow_mut() += 1;
        *with_network.borrow_mut() += u32::from(seed.network_config.is_some());
        let problems = oracle.borrow_mut().problems(&seed, &machine.hostname);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "cloud-init refuses the seed of\n{}\n{}\n--- user-data\n{}\n--- network-config\n{}",
                case.machine,
                problems.join("\n"),
                seed.user_data,
                seed.network_config.as_deref().unwrap_or("(none)"),
            )))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generators must reach both kinds of network, or the property
    // says nothing about network-config.
    let (accepted, with_network) = (*accepted.borrow(), *with_network.borrow());
    assert!(accepted >= cases, "only {accepted} cases rendered");
    let rejected = rejected.into_inner();
    assert!(
        rejected.len() <= accepted as usize,
        "the generators make more invalid machines than valid ones: {:?}",
        &rejected[..rejected.len().min(10)]
    );
    assert!(
        with_network > accepted / 10 && with_network < accepted,
        "{with_network} of {accepted} seeds had a network-config"
    );
}

/// The oracle must refuse what cloud-init refuses, or its accepting the
/// rendered seeds above proves nothing: an unquoted `no` hostname, a
/// deprecated user key, a MAC YAML 1.1 reads as a number, a meta-data
/// hostname that is not a string.
#[test]
fn the_oracle_refuses_what_cloud_init_refuses() {
    let test = "the_oracle_refuses_what_cloud_init_refuses";
    let mut oracle = match Oracle::start() {
        Ok(o) => o,
        Err(why) => {
            return oracle_unavailable(
                test,
                &format!("Debian's cloud-init Python package and cloud-init's schemas ({why})"),
                "apt-get install cloud-init (./test.sh does); oracles/cloud-init-schemas fetches the schemas from Debian",
            )
        }
    };
    let good_meta = "instance-id: i-1\nlocal-hostname: web\n";
    let seed = |user_data: &str, network: Option<&str>, meta: &str| fabric_cloudinit::Seed {
        user_data: user_data.into(),
        meta_data: meta.into(),
        network_config: network.map(str::to_string),
    };
    let good = seed("#cloud-config\nhostname: web\n", None, good_meta);
    assert_eq!(oracle.problems(&good, "web"), Vec::<String>::new());
    for (bad, hostname, why) in [
        (
            seed("#cloud-config\nhostname: no\n", None, good_meta),
            "web",
            "hostname: False",
        ),
        (
            seed("hostname: web\n", None, good_meta),
            "web",
            "#cloud-config",
        ),
        (
            seed(
                "#cloud-config\nusers: [{name: a, lock-passwd: true}]\n",
                None,
                good_meta,
            ),
            "web",
            "deprecated",
        ),
        (
            seed(
                "#cloud-config\n",
                Some("version: 2\nethernets: {e: {match: {macaddress: 52:54:00:12:34:56}}}\n"),
                good_meta,
            ),
            "web",
            "network-config",
        ),
        (
            seed(
                "#cloud-config\n",
                None,
                "instance-id: i-1\nlocal-hostname: no\n",
            ),
            "no",
            "local-hostname is False",
        ),
    ] {
        let problems = oracle.problems(&bad, hostname);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "expected a problem mentioning {why:?} for {bad:?}, got {problems:?}"
        );
    }
}

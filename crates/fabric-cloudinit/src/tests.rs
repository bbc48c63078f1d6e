//! Unit tests of the rendered files. The oracles that run real cloud-init,
//! PyYAML and isoinfo are in `tests/`.

use fabric_model::{secret, AuthorizedKey, Machine};
use serde_json::{json, Value};

use super::*;

const TRAPS: &str = include_str!("../tests/fixtures/yaml11-traps.yaml");
const BY_NAME: &str = include_str!("../tests/fixtures/static-by-name.yaml");
const DHCP_SECRET: &str = include_str!("../tests/fixtures/dhcp-secret.yaml");
const SECRET: &str = include_str!("../tests/fixtures/admin-keys-secret.yaml");

const ED_ON: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK3/ygCEOa9t3J+0kBPrA0vTB6mqLRZBsrWmYSJMoET7 on";

const ED_CI_BARE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmLUAs0BbKFjMOaRHPo/sqBe70JbHvWkt1a46YURZCn";

fn machine(text: &str) -> Machine {
    match Machine::from_yaml(text) {
        Ok(m) => m,
        Err(d) => panic!("fixture is invalid: {d:?}"),
    }
}

fn secret_keys() -> Vec<AuthorizedKey> {
    secret::keys_from_yaml(SECRET, "admin-keys", "authorized_keys").unwrap()
}

/// The YAML body of a rendered file, read as JSON (the stricter grammar).
fn body(text: &str) -> Value {
    let json = text.strip_prefix("#cloud-config\n").unwrap_or(text);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn user_data_has_the_whole_intended_structure() {
    let m = machine(TRAPS);
    let seed = render(&m, None, &RenderOptions::default()).unwrap();
    assert!(seed.user_data.starts_with("#cloud-config\n{\n"));
    assert!(seed.user_data.ends_with("}\n"));
    let ud = body(&seed.user_data);
    let script = ud["write_files"][1]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let rsa = m.ssh_keys[1].openssh().to_string();
    assert_eq!(
        ud,
        json!({
            "hostname": "no",
            "fqdn": "no.yes.lan",
            "users": [{
                "name": "off",
                "groups": ["wheel"],
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": true,
                "shell": "/run/current-system/sw/bin/bash",
                "ssh_authorized_keys": [ED_ON, rsa],
            }],
            "write_files": [
                {
                    "path": "/etc/nix-flake-target",
                    "content": "git+https://github.com/org/fleet?ref=main#no\n",
                    "owner": "root:root",
                    "permissions": "0644",
                },
                {
                    "path": "/var/lib/cloud/scripts/per-boot/fabric-bootstrap",
                    "content": script,
                    "owner": "root:root",
                    "permissions": "0755",
                },
            ],
        })
    );
    // Field order is part of the output contract (stable diffs).
    let keys: Vec<&String> = ud.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["hostname", "fqdn", "users", "write_files"]);
    assert!(script.contains("fabric_flake='github:kubelize/fabric'\n"));
}

#[test]
fn no_fqdn_without_domain_and_no_default_user() {
    let m = machine(DHCP_SECRET);
    let keys = secret_keys();
    let ud = body(&render_user_data(&m, Some(&keys), &RenderOptions::default()).unwrap());
    assert_eq!(ud["hostname"], "basic");
    assert!(ud.get("fqdn").is_none());
    assert_eq!(ud["users"].as_array().unwrap().len(), 1);
    assert_eq!(ud["users"][0]["name"], "admin");
}

#[test]
fn avoids_keys_nixos_ignores_or_breaks_on() {
    for text in [TRAPS, BY_NAME] {
        let seed = render(&machine(text), None, &RenderOptions::default()).unwrap();
        let ud = body(&seed.user_data);
        for key in [
            "packages",
            "package_upgrade",
            "apt",
            "ssh_pwauth",
            "manage_etc_hosts",
            "runcmd",
            "bootcmd",
        ] {
            assert!(ud.get(key).is_none(), "{key} in user-data");
        }
        for f in ud["write_files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            for ro in [
                "/nix/",
                "/run/current-system/",
                "/etc/systemd/system/",
                "/usr/",
                "/bin/",
            ] {
                assert!(!path.starts_with(ro), "{path} is read-only on NixOS");
            }
        }
    }
}

#[test]
fn rendering_is_deterministic() {
    let m = machine(TRAPS);
    let a = render(&m, None, &RenderOptions::default()).unwrap();
    let b = render(&m.clone(), None, &RenderOptions::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn network_config_matches_the_mac_and_routes_both_families() {
    let seed = render(&machine(TRAPS), None, &RenderOptions::default()).unwrap();
    let text = seed.network_config.as_deref().unwrap();
    assert!(!text.contains("default"), "{text}");
    assert!(!text.contains("gateway4") && !text.contains("gateway6"));
    assert_eq!(
        body(text),
        json!({
            "version": 2,
            "ethernets": {
                "ens18": {
                    "match": {"macaddress": "52:54:00:12:34:56"},
                    "set-name": "ens18",
                    "dhcp4": false,
                    "dhcp6": false,
                    "addresses": ["10.0.1.10/24", "fd00::10/64"],
                    "routes": [
                        {"to": "0.0.0.0/0", "via": "10.0.1.1"},
                        {"to": "::/0", "via": "fd00::1"},
                    ],
                    "nameservers": {
                        "addresses": ["10.0.1.10", "1.1.1.1"],
                        "search": ["yes.lan", "on.lan"],
                    },
                }
            }
        })
    );
}

#[test]
fn network_config_by_name_uses_defaults() {
    let seed = render(&machine(BY_NAME), None, &RenderOptions::default()).unwrap();
    let net = body(seed.network_config.as_deref().unwrap());
    let eth = &net["ethernets"]["ens18"];
    assert_eq!(eth["match"], json!({"name": "ens18"}));
    assert!(eth.get("set-name").is_none());
    assert_eq!(
        eth["routes"],
        json!([{"to": "0.0.0.0/0", "via": "10.0.1.1"}])
    );
    // The model's defaults: public resolvers, and the domain as search.
    assert_eq!(
        eth["nameservers"],
        json!({"addresses": ["1.1.1.1", "8.8.8.8"], "search": ["homelab.local"]})
    );
}

#[test]
fn mac_is_lowercased() {
    let text = TRAPS.replace("52:54:00:12:34:56", "BC:24:11:5E:00:0A");
    let seed = render(&machine(&text), None, &RenderOptions::default()).unwrap();
    let net = body(seed.network_config.as_deref().unwrap());
    assert_eq!(
        net["ethernets"]["ens18"]["match"]["macaddress"],
        "bc:24:11:5e:00:0a"
    );
}

#[test]
fn ipv6_only_keeps_dhcp4() {
    let text = BY_NAME
        .replace("    ip: 10.0.1.10\n    cidr: 24\n    gateway: 10.0.1.1\n", "")
        .replace(
            "    interface: ens18\n",
            "    interface: ens18\n    ipv6: {address: \"2001:db8::5\", prefix: 64, gateway: \"fe80::1\"}\n",
        );
    let seed = render(&machine(&text), None, &RenderOptions::default()).unwrap();
    let eth = body(seed.network_config.as_deref().unwrap())["ethernets"]["ens18"].clone();
    assert_eq!(eth["dhcp4"], true);
    assert_eq!(eth["dhcp6"], false);
    assert_eq!(eth["addresses"], json!(["2001:db8::5/64"]));
    assert_eq!(eth["routes"], json!([{"to": "::/0", "via": "fe80::1"}]));
}

#[test]
fn dhcp_has_no_network_config() {
    let keys = secret_keys();
    let seed = render(
        &machine(DHCP_SECRET),
        Some(&keys),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(seed.network_config, None);
    let names: Vec<&str> = seed.files().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["user-data", "meta-data"]);
}

#[test]
fn files_are_in_fixed_order() {
    let seed = render(&machine(TRAPS), None, &RenderOptions::default()).unwrap();
    let files = seed.files();
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["user-data", "meta-data", "network-config"]);
    assert_eq!(files[0].1, seed.user_data);
    assert_eq!(files[2].1, seed.network_config.as_deref().unwrap());
}

#[test]
fn meta_data_is_stable_per_machine_and_differs_between() {
    let a = machine(TRAPS);
    let md = body(&render_meta_data(&a).unwrap());
    assert_eq!(
        md,
        json!({"instance-id": a.instance_id(), "local-hostname": "no"})
    );
    assert_eq!(render_meta_data(&a).unwrap(), render_meta_data(&a).unwrap());
    let other_uid = machine(&TRAPS.replace("0f8a3b2c1d00", "0f8a3b2c1d01"));
    assert_ne!(
        render_meta_data(&a).unwrap(),
        render_meta_data(&other_uid).unwrap()
    );
    let b = machine(BY_NAME);
    assert_ne!(
        body(&render_meta_data(&b).unwrap())["instance-id"],
        md["instance-id"]
    );
}

#[test]
fn secret_keys_are_required_when_named() {
    let m = machine(DHCP_SECRET);
    let err = render(&m, None, &RenderOptions::default()).unwrap_err();
    assert_eq!(
        err,
        RenderError::SecretKeysMissing {
            name: "admin-keys".into(),
            key: "authorized_keys".into()
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("admin-keys") && msg.contains("authorized_keys"),
        "{msg}"
    );
    assert!(msg.contains("--secret SECRET.yaml"), "{msg}");
}

#[test]
fn secret_keys_are_merged_once_in_order() {
    let m = machine(DHCP_SECRET);
    let keys = secret_keys();
    assert_eq!(keys.len(), 2);
    let merged = authorized_keys(&m, Some(&keys)).unwrap();
    // The Secret repeats the inline key with another comment: kept once,
    // as first given.
    let lines: Vec<&str> = merged.iter().map(|k| k.openssh()).collect();
    assert_eq!(lines, [m.ssh_keys[0].openssh(), keys[1].openssh()]);
    assert!(lines[0].ends_with(" alice@laptop"));
    let ud = body(&render_user_data(&m, Some(&keys), &RenderOptions::default()).unwrap());
    assert_eq!(ud["users"][0]["ssh_authorized_keys"], json!(lines));
}

#[test]
fn an_empty_key_set_is_refused() {
    let text = DHCP_SECRET.replace(
        "    sshAuthorizedKeys:\n      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK3/ygCEOa9t3J+0kBPrA0vTB6mqLRZBsrWmYSJMoET7 alice@laptop\n",
        "",
    );
    let m = machine(&text);
    assert!(m.ssh_keys.is_empty());
    assert_eq!(
        render(&m, Some(&[]), &RenderOptions::default()).unwrap_err(),
        RenderError::NoKeys
    );
}

#[test]
fn fabric_flake_is_checked_without_needing_an_attribute() {
    for ok in [
        DEFAULT_FABRIC_FLAKE,
        "github:kubelize/fabric/v1.2.0",
        "github:kubelize/fabric#fabric",
        "git+https://git.example.org/infra/fabric?ref=release/1",
        "git+file:///srv/fabric",
        "https://example.org/fabric.tar.gz",
    ] {
        check_fabric_flake(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, says) in [
        ("path:/srv/fabric", "path:"),
        (
            "git+https://user:ghp_x@github.com/kubelize/fabric",
            "access-tokens",
        ),
        ("github:kubelize/fabric extra", "character"),
        ("", "empty"),
        ("github:kubelize/fabric#", "nothing follows"),
    ] {
        let err = check_fabric_flake(bad).expect_err(bad);
        let msg = err.to_string();
        assert!(msg.contains(says), "{bad}: {msg}");
        assert!(!msg.contains("#fabric"), "{bad}: {msg}");
    }
    let m = machine(BY_NAME);
    let opts = RenderOptions {
        fabric_flake: "path:/srv/fabric".into(),
    };
    assert!(matches!(
        render(&m, None, &opts),
        Err(RenderError::FabricFlake { .. })
    ));
}

#[test]
fn fabric_flake_lands_quoted_in_the_script() {
    let m = machine(BY_NAME);
    let opts = RenderOptions {
        fabric_flake: "git+https://example.org/it's/fabric?ref=a&dir=b".into(),
    };
    let ud = body(&render_user_data(&m, None, &opts).unwrap());
    let script = ud["write_files"][1]["content"].as_str().unwrap();
    assert!(
        script.contains("fabric_flake='git+https://example.org/it'\\''s/fabric?ref=a&dir=b'\n"),
        "{script}"
    );
}

#[test]
fn the_body_is_ascii_for_unicode_comments() {
    // A comment with characters YAML 1.1 reads as line breaks (U+2028)
    // or treats specially (a BOM).
    let key = format!("{ED_CI_BARE} caf\u{e9}\u{2028}x\u{feff}y\u{1F511}");
    let k = fabric_model::sshkeys::parse(&key).unwrap();
    let m = machine(DHCP_SECRET);
    let keys = [k.clone()];
    let text = render_user_data(&m, Some(&keys), &RenderOptions::default()).unwrap();
    assert!(
        text.contains("caf\\u00e9\\u2028x\\ufeffy\u{1F511}"),
        "{text}"
    );
    let ud = body(&text);
    assert_eq!(
        ud["users"][0]["ssh_authorized_keys"][0],
        m.ssh_keys[0].openssh()
    );
    assert_eq!(ud["users"][0]["ssh_authorized_keys"][1], k.openssh());
}

#[test]
fn seed_image_is_reproducible_and_labelled() {
    let seed = render(&machine(TRAPS), None, &RenderOptions::default()).unwrap();
    let a = seed_iso(&seed).unwrap();
    let b = seed_iso(&seed.clone()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len() % 2048, 0);
    // Primary volume descriptor at sector 16: type 1, "CD001", volume id at
    // byte 40, padded with spaces to 32 bytes.
    let pvd = &a[16 * 2048..17 * 2048];
    assert_eq!(&pvd[..6], b"\x01CD001");
    assert_eq!(&pvd[40..72], format!("{:<32}", "cidata").as_bytes());
    for (_, text) in seed.files() {
        assert!(
            a.windows(text.len()).any(|w| w == text.as_bytes()),
            "a file is not stored contiguously in the image"
        );
    }
    let other = render(&machine(BY_NAME), None, &RenderOptions::default()).unwrap();
    assert_ne!(seed_iso(&other).unwrap(), a);
}

const DB01: &str = include_str!("../../../examples/private-fleet/db01.yaml");
const DB01_KEY: &str = include_str!("../../../examples/private-fleet/db01-deploy-key.yaml");
const WEB02: &str = include_str!("../../../examples/private-fleet/web02.yaml");
const WEB02_TOKEN: &str = include_str!("../../../examples/private-fleet/web02-token.yaml");

fn credential_of(m: &Machine, text: &str) -> Credential {
    let docs = fabric_model::source::parse_yaml(text).unwrap();
    fabric_model::credential::for_machine(&docs, m)
        .unwrap()
        .unwrap()
}

fn credential_files_of(user_data: &str) -> Vec<Value> {
    body(user_data)["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"].as_str().unwrap().starts_with(CREDENTIALS_DIR))
        .cloned()
        .collect()
}

#[test]
fn a_deploy_key_becomes_two_root_only_files() {
    let m = machine(DB01);
    let c = credential_of(&m, DB01_KEY);
    let secrets = SecretData {
        ssh_keys: None,
        credential: Some(&c),
    };
    let ud = render_user_data_with(&m, &secrets, &RenderOptions::default()).unwrap();
    let Credential::SshKey(k) = &c else { panic!() };
    assert_eq!(
        credential_files_of(&ud),
        [
            json!({"path": SSH_KEY_FILE, "content": k.private_key(), "owner": "root:root", "permissions": "0600"}),
            json!({"path": KNOWN_HOSTS_FILE, "content": k.known_hosts(), "owner": "root:root", "permissions": "0600"}),
        ]
    );
    assert!(k
        .private_key()
        .ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
}

#[test]
fn tokens_become_one_root_only_file() {
    let m = machine(WEB02);
    let c = credential_of(&m, WEB02_TOKEN);
    let secrets = SecretData {
        ssh_keys: None,
        credential: Some(&c),
    };
    let ud = render_user_data_with(&m, &secrets, &RenderOptions::default()).unwrap();
    assert_eq!(
        credential_files_of(&ud),
        [json!({
            "path": ACCESS_TOKENS_FILE,
            "content": "github.com=github_pat_FAKE0example0token0not0a0real0secret\n",
            "owner": "root:root",
            "permissions": "0600"
        })]
    );
}

#[test]
fn a_machine_naming_a_credential_is_not_rendered_without_it() {
    let m = machine(DB01);
    let err = render(&m, None, &RenderOptions::default()).unwrap_err();
    assert_eq!(
        err,
        RenderError::CredentialMissing {
            name: "fleet-deploy-key".into()
        }
    );
    assert!(err.to_string().contains("--secret"), "{err}");
}

#[test]
fn a_credential_for_a_machine_naming_none_is_not_delivered() {
    let c = credential_of(&machine(WEB02), WEB02_TOKEN);
    let m = machine(TRAPS);
    let secrets = SecretData {
        ssh_keys: None,
        credential: Some(&c),
    };
    let ud = render_user_data_with(&m, &secrets, &RenderOptions::default()).unwrap();
    assert!(credential_files_of(&ud).is_empty());
    assert!(!ud.contains("github_pat_FAKE"));
}

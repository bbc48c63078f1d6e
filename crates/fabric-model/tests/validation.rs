//! Each validation rule of the Machine API, with the exact field path and
//! position it is reported at.

use fabric_model::{Machine, Severity};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

/// A valid static machine; `spec_extra` lines are appended under `spec:`
/// and `net` replaces the network block.
fn manifest(net: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: infra.kubelize.io/v1alpha1
kind: Machine
metadata:
  name: dns01
spec:
  hostname: dns01
  domain: homelab.local
  cpu: {{cores: 2}}
  memory: {{size: 4096}}
  image: nixos-template
{net}  nix:
    flakeRef: git+https://github.com/org/fabric#dns01
  bootstrap:
    sshAuthorizedKeys:
      - {KEY}
{spec_extra}"
    )
}

const STATIC: &str = "  network:
    dhcp: false
    ip: 10.0.1.10
    cidr: 24
    gateway: 10.0.1.1
";

fn errors(yaml: &str) -> Vec<String> {
    match Machine::from_yaml(yaml) {
        Ok(m) => panic!("expected errors, got a machine {}", m.name),
        Err(diags) => diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.located("m.yaml"))
            .collect(),
    }
}

fn one_error(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn valid_static_machine_resolves_defaults() {
    let m = Machine::from_yaml(&manifest(STATIC, "")).unwrap();
    assert_eq!(m.fqdn().as_deref(), Some("dns01.homelab.local"));
    assert_eq!(
        (m.cores, m.sockets, m.memory_mib, m.disk_gib),
        (2, 1, 4096, 32)
    );
    assert_eq!(m.network.interface, "ens18");
    assert_eq!(m.network.ipv4.unwrap().0.to_string(), "10.0.1.10/24");
    assert_eq!(m.network.dns.len(), 2);
    assert_eq!(m.network.search_domains, vec!["homelab.local".to_string()]);
    assert_eq!(m.admin_user, "admin");
    assert_eq!(m.proxmox.storage, "local-zfs");
    assert_eq!(m.proxmox.bridge, "vmbr0");
}

#[test]
fn gateway_outside_subnet_is_located_at_the_value() {
    let net = STATIC.replace("10.0.1.1\n", "10.0.2.1\n");
    assert_eq!(
        one_error(&manifest(&net, "")),
        "m.yaml:15:14: spec.network.gateway: 10.0.2.1 is outside 10.0.1.0/24 (an address inside 10.0.1.0/24, or a different ip/cidr)"
    );
}

#[test]
fn network_and_broadcast_addresses_are_refused_except_31_and_32() {
    let e = one_error(&manifest(&STATIC.replace("10.0.1.10", "10.0.1.0"), ""));
    assert!(
        e.contains("spec.network.ip: 10.0.1.0 is the network address of 10.0.1.0/24"),
        "{e}"
    );
    let e = one_error(&manifest(&STATIC.replace("10.0.1.10", "10.0.1.255"), ""));
    assert!(e.contains("broadcast"), "{e}");
    let p2p =
        "  network:\n    dhcp: false\n    ip: 10.0.1.0\n    cidr: 31\n    gateway: 10.0.1.1\n";
    Machine::from_yaml(&manifest(p2p, "")).unwrap();
    let host = "  network:\n    ip: 10.0.1.7\n    cidr: 32\n";
    Machine::from_yaml(&manifest(host, "")).unwrap();
}

#[test]
fn gateway_may_not_be_the_ip() {
    let e = one_error(&manifest(
        &STATIC.replace("gateway: 10.0.1.1", "gateway: 10.0.1.10"),
        "",
    ));
    assert!(
        e.contains("spec.network.gateway: 10.0.1.10 is the machine's own address"),
        "{e}"
    );
}

#[test]
fn ranges_are_enforced_with_their_bounds() {
    let e = one_error(&manifest(&STATIC.replace("cidr: 24", "cidr: 33"), ""));
    assert_eq!(
        e,
        "m.yaml:14:11: spec.network.cidr: 33 is out of range (must be between 1 and 32)"
    );
    let e = one_error(&manifest(STATIC, "").replace("cores: 2", "cores: 129"));
    assert!(
        e.contains("spec.cpu.cores: 129 is out of range (must be between 1 and 128)"),
        "{e}"
    );
    let e = one_error(&manifest(STATIC, "").replace("size: 4096", "size: 256"));
    assert!(e.contains("spec.memory.size: 256 is out of range"), "{e}");
    let e = one_error(&manifest(STATIC, "  disk: {size: 4}\n"));
    assert!(
        e.contains("spec.disk.size: 4 is out of range (must be between 8 and 65536)"),
        "{e}"
    );
    let e = one_error(&manifest(STATIC, "  proxmox: {vlan: 4095}\n"));
    assert!(
        e.contains("spec.proxmox.vlan: 4095 is out of range (must be between 1 and 4094)"),
        "{e}"
    );
}

#[test]
fn dns_entries_must_be_addresses() {
    let net = format!("{STATIC}    dns: [10.0.1.10, dns.google]\n");
    let e = one_error(&manifest(&net, ""));
    assert!(
        e.contains("spec.network.dns[1]: dns.google is not an IP address"),
        "{e}"
    );
}

#[test]
fn ipv6_rules() {
    let v6 = |a: &str, p: &str, g: &str| {
        format!("  network:\n    dhcp: false\n    ipv6: {{address: \"{a}\", prefix: {p}, gateway: \"{g}\"}}\n")
    };
    let m = Machine::from_yaml(&manifest(&v6("fd00::10", "64", "fd00::1"), "")).unwrap();
    assert!(m.network.ipv4.is_none());
    assert!(m.network.ipv6.is_some());
    assert!(one_error(&manifest(&v6("fd00::zz", "64", "fd00::1"), ""))
        .contains("spec.network.ipv6.address: fd00::zz is not an IPv6 address"));
    assert!(one_error(&manifest(&v6("fd00::10", "129", "fd00::1"), ""))
        .contains("spec.network.ipv6.prefix: 129 is out of range"));
    assert!(one_error(&manifest(&v6("fd00::10", "64", "fd01::1"), ""))
        .contains("spec.network.ipv6.gateway: fd01::1 is outside fd00::/64"));
    Machine::from_yaml(&manifest(&v6("fd00::10", "64", "fe80::1"), "")).unwrap();
}

#[test]
fn mac_rules() {
    let net = |mac: &str| format!("{STATIC}    macAddress: \"{mac}\"\n");
    Machine::from_yaml(&manifest(&net("BC:24:11:5E:00:01"), "")).unwrap();
    assert!(one_error(&manifest(&net("01:24:11:5E:00:01"), ""))
        .contains("spec.network.macAddress: 01:24:11:5E:00:01 is a multicast address"));
    assert!(one_error(&manifest(&net("BC:24:11:5E:00"), "")).contains("is not six hex octets"));
    assert!(one_error(&manifest(&net("FC:FF:FF:00:00:01"), "")).contains("registered OUI"));
    // Unquoted, YAML 1.1 would read this as a base-60 integer; Fabric keeps the text.
    let unquoted = format!("{STATIC}    macAddress: 52:54:00:12:34:56\n");
    let m = Machine::from_yaml(&manifest(&unquoted, "")).unwrap();
    assert_eq!(m.network.mac.unwrap().to_string(), "52:54:00:12:34:56");
}

#[test]
fn unknown_fields_name_the_closest_known_one() {
    let e = one_error(&manifest(STATIC, "  hostnme: x\n"));
    assert_eq!(
        e,
        "m.yaml:21:3: spec.hostnme: unknown field (did you mean hostname?)"
    );
    let e = one_error(&manifest(&STATIC.replace("gateway:", "gatway:"), ""));
    assert!(
        e.contains("spec.network.gatway: unknown field (did you mean gateway?)"),
        "{e}"
    );
    let e = one_error(&(manifest(STATIC, "") + "stauts: {}\n"));
    assert!(
        e.contains("stauts: unknown field (did you mean status?)")
            || e.contains("stauts: unknown field"),
        "{e}"
    );
}

#[test]
fn every_error_is_collected() {
    let net = "  network:\n    ip: 10.0.1.0\n    gateway: 10.9.9.9\n    dns: [x]\n";
    let yaml = manifest(net, "  tags: {Role: dns}\n").replace("hostname: dns01", "hostname: DNS01");
    let e = errors(&yaml);
    let paths: Vec<&str> = e.iter().map(|l| l.split(": ").nth(1).unwrap()).collect();
    for p in [
        "spec.hostname",
        "spec.network.ip",
        "spec.network.gateway",
        "spec.network.dns[0]",
        "spec.tags.Role",
    ] {
        assert!(paths.contains(&p), "{p} missing from {e:#?}");
    }
}

#[test]
fn types_are_checked_against_the_schema() {
    let e = one_error(&manifest(STATIC, "").replace("cores: 2", "cores: \"2\""));
    assert!(e.contains("spec.cpu.cores: expected a whole number, found the string \"2\" (write 2 without quotes)"), "{e}");
    let e = one_error(&manifest(STATIC, "").replace("dhcp: false", "dhcp: nope"));
    assert!(
        e.contains("spec.network.dhcp: expected true or false"),
        "{e}"
    );
    let e = one_error(&manifest(STATIC, "  class: huge\n"));
    assert!(
        e.contains("spec.class: huge is not a known value (one of small, medium, large)"),
        "{e}"
    );
}

#[test]
fn required_fields_and_class_presets() {
    let no_cpu = manifest(STATIC, "").replace("  cpu: {cores: 2}\n", "");
    assert!(one_error(&no_cpu).contains("spec.cpu: is required unless class is set"));
    let with_class = no_cpu.replace("  memory: {size: 4096}\n", "  class: large\n");
    let m = Machine::from_yaml(&with_class).unwrap();
    assert_eq!((m.cores, m.memory_mib, m.disk_gib), (8, 16384, 200));
    let no_image = manifest(STATIC, "").replace("  image: nixos-template\n", "");
    let e = one_error(&no_image);
    assert!(
        e.starts_with("m.yaml:6:3: spec.image: is required but missing"),
        "{e}"
    );
}

#[test]
fn yaml_1_1_words_are_strings_where_strings_are_expected() {
    let yaml = manifest("", "")
        .replace("hostname: dns01", "hostname: no")
        .replace("domain: homelab.local", "domain: yes.lan");
    let yaml = yaml.replace("  bootstrap:\n", "  bootstrap:\n    adminUser: off\n");
    let m = Machine::from_yaml(&yaml).unwrap();
    assert_eq!(m.hostname, "no");
    assert_eq!(m.domain.as_deref(), Some("yes.lan"));
    assert_eq!(m.admin_user, "off");
}

#[test]
fn ssh_key_rules() {
    let no_keys =
        manifest(STATIC, "").replace(&format!("    sshAuthorizedKeys:\n      - {KEY}\n"), "");
    assert!(one_error(&no_keys)
        .contains("spec.bootstrap.sshAuthorizedKeys: the machine has no SSH key"));
    let secret_only = no_keys.replace(
        "  bootstrap:\n",
        "  bootstrap:\n    sshAuthorizedKeysSecretRef: {name: admin-keys}\n",
    );
    let m = Machine::from_yaml(&secret_only).unwrap();
    assert_eq!(m.ssh_keys_secret.unwrap().key, "authorized_keys");
    let private = manifest(STATIC, "").replace(KEY, "\"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEA\\n-----END OPENSSH PRIVATE KEY-----\"");
    let e = one_error(&private);
    assert!(
        e.contains("spec.bootstrap.sshAuthorizedKeys[0]: is a private key"),
        "{e}"
    );
    assert!(
        !e.contains("b3BlbnNzaC1rZXktdjEA"),
        "key material leaked: {e}"
    );
    let two_lines =
        manifest(STATIC, "").replace(&format!("- {KEY}"), &format!("- \"{KEY}\\n{KEY}\""));
    assert!(one_error(&two_lines).contains("spans several lines"));
    let root =
        manifest(STATIC, "").replace("  bootstrap:\n", "  bootstrap:\n    adminUser: root\n");
    assert!(one_error(&root).contains("spec.bootstrap.adminUser: \"root\" is a system account"));
}

#[test]
fn flake_ref_rules_are_reported_on_the_field() {
    let with = |r: &str| manifest(STATIC, "").replace("git+https://github.com/org/fabric#dns01", r);
    assert!(one_error(&with("path:/etc/nixos#dns01"))
        .contains("spec.nix.flakeRef: path:/etc/nixos is a path: flake"));
    let e = one_error(&with(
        "git+https://bob:ghp_secret@github.com/org/fabric#dns01",
    ));
    assert!(e.contains("access-tokens"), "{e}");
    assert!(!e.contains("ghp_secret"), "token leaked: {e}");
    assert!(one_error(&with("git+https://github.com/org/fabric"))
        .contains("does not name a nixosConfiguration"));
    let m = Machine::from_yaml(&with("git+file:///srv/fleet?ref=main#dns01")).unwrap();
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].to_string().contains("local tests"));
}

#[test]
fn kinds_and_envelope() {
    let x = manifest(STATIC, "").replace("kind: Machine", "kind: XMachine");
    assert_eq!(
        Machine::from_yaml(&x).unwrap().kind,
        fabric_model::MachineKind::XMachine
    );
    let typo = manifest(STATIC, "").replace("kind: Machine", "kind: Machin");
    assert!(one_error(&typo)
        .contains("kind: Machin is not a kind of infra.kubelize.io (did you mean Machine?)"));
    let v = manifest(STATIC, "").replace("v1alpha1", "v1");
    assert!(
        one_error(&v).contains("apiVersion: infra.kubelize.io/v1 is not the Machine API version")
    );
    let no_name = manifest(STATIC, "").replace("  name: dns01\n", "  namespace: x\n");
    assert!(one_error(&no_name).contains("metadata.name: is required but missing"));
}

#[test]
fn instance_ids_are_stable_and_distinct() {
    let a = Machine::from_yaml(&manifest(STATIC, "")).unwrap();
    let b = Machine::from_yaml(&manifest(STATIC, "")).unwrap();
    assert_eq!(a.instance_id(), b.instance_id());
    let c = Machine::from_yaml(&manifest(STATIC, "").replace("name: dns01\n", "name: dns02\n"))
        .unwrap();
    assert_ne!(a.instance_id(), c.instance_id());
    let d = Machine::from_yaml(
        &manifest(STATIC, "").replace("  name: dns01\n", "  name: dns01\n  uid: 1234\n"),
    )
    .unwrap();
    assert_ne!(a.instance_id(), d.instance_id());
}

#[test]
fn observed_objects_tolerate_cluster_fields() {
    let m = Machine::from_yaml(&manifest(STATIC, "")).unwrap();
    let mut json = serde_json::json!({
        "apiVersion": "infra.kubelize.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "dns01", "namespace": "ns", "uid": "u", "generation": 3, "resourceVersion": "9"},
        "spec": serde_json::to_value(&m.spec).unwrap(),
        "status": {"phase": "Running"}
    });
    json["spec"]["crossplane"] = serde_json::json!({"compositionRef": {"name": "x"}});
    let o = Machine::from_json(&json).unwrap();
    assert_eq!(o.namespace.as_deref(), Some("ns"));
    json["spec"]["hostname"] = serde_json::json!("Bad_Host");
    let e = Machine::from_json(&json).unwrap_err();
    assert_eq!(e[0].path, "spec.hostname");
}

#[test]
fn empty_metadata_or_spec_is_reported_not_swallowed() {
    let e = Machine::from_json(&serde_json::json!({"apiVersion": "infra.kubelize.io/v1alpha1", "kind": "Machine", "metadata": {"name": "m"}, "spec": null})).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "spec");
    let e = errors("apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata:\nspec:\n");
    assert!(
        e.iter()
            .any(|l| l.contains("metadata: is required but missing")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("spec: is required but missing")),
        "{e:?}"
    );
}

//! Checks across machines.

use fabric_model::fleet::{conflicts, Member};
use fabric_model::Machine;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

fn machine(name: &str, host: &str, ip: &str, v6: Option<&str>) -> Machine {
    let v6 = v6
        .map(|a| format!("    ipv6: {{address: \"{a}\"}}\n"))
        .unwrap_or_default();
    Machine::from_yaml(&format!(
        "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata:\n  name: {name}\nspec:\n  hostname: {host}\n  class: small\n  image: t\n  network:\n    ip: {ip}\n{v6}  nix:\n    flakeRef: github:o/r#{host}\n  bootstrap:\n    sshAuthorizedKeys: [\"{KEY}\"]\n"
    ))
    .unwrap()
}

#[test]
fn duplicates_name_every_file_involved() {
    let ms = [
        machine("a", "dns01", "10.0.0.1", Some("fd00::1")),
        machine("b", "dns01", "10.0.0.2", None),
        machine("c", "web", "10.0.0.1", Some("fd00::1")),
        machine("d", "dns01", "10.0.0.3", None),
    ];
    let files = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"];
    let members: Vec<Member> = ms
        .iter()
        .zip(files)
        .map(|(machine, file)| Member { file, machine })
        .collect();
    let found = conflicts(&members);
    let lines: Vec<String> = found
        .iter()
        .map(|c| c.diagnostic.located(files[c.member]))
        .collect();
    assert!(lines.contains(&"a.yaml:6:13: spec.hostname: hostname dns01 is also used by b.yaml:6:13, d.yaml:6:13 (give every machine its own hostname)".to_string()), "{lines:#?}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("d.yaml:6:13: spec.hostname")
            && l.contains("a.yaml:6:13, b.yaml:6:13")));
    assert!(lines.iter().any(|l| l.starts_with(
        "c.yaml:10:9: spec.network.ip: static address 10.0.0.1 is also used by a.yaml:10:9"
    )));
    assert!(lines.iter().any(|l| l.starts_with("a.yaml:11:21: spec.network.ipv6.address: static address fd00::1 is also used by c.yaml")), "{lines:#?}");
    // 3 hostname errors, 2 IPv4 errors, 2 IPv6 errors.
    assert_eq!(found.len(), 7, "{lines:#?}");
}

#[test]
fn a_clash_of_many_machines_is_reported_in_linear_space() {
    let n = 2_000;
    let one = machine("a", "dns01", "10.0.0.1", None);
    let files: Vec<String> = (0..n).map(|i| format!("m{i}.yaml")).collect();
    let members: Vec<Member> = files
        .iter()
        .map(|file| Member {
            file,
            machine: &one,
        })
        .collect();
    let found = conflicts(&members);
    // One hostname error and one address error per machine.
    assert_eq!(found.len(), 2 * n);
    let longest = found
        .iter()
        .map(|c| c.diagnostic.to_string().len())
        .max()
        .unwrap_or_default();
    assert!(longest < 400, "an error of {longest} bytes");
    let first = found[0].diagnostic.located(&files[found[0].member]);
    assert!(
        first.starts_with("m0.yaml:6:13: spec.hostname: hostname dns01 is also used by m1.yaml:6:13, m2.yaml:6:13,")
            && first.contains(&format!("m8.yaml:6:13, and {} more (", n - 9)),
        "{first}"
    );
}

#[test]
fn distinct_machines_do_not_conflict() {
    let ms = [
        machine("a", "a", "10.0.0.1", None),
        machine("b", "b", "10.0.0.2", None),
    ];
    let members: Vec<Member> = ms
        .iter()
        .map(|machine| Member { file: "f", machine })
        .collect();
    assert!(conflicts(&members).is_empty());
}

fn with_mac(name: &str, ip: &str, mac: &str) -> Machine {
    Machine::from_yaml(&format!(
        "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata:\n  name: {name}\nspec:\n  hostname: {name}\n  class: small\n  image: t\n  network:\n    ip: {ip}\n    macAddress: \"{mac}\"\n  nix:\n    flakeRef: github:o/r#{name}\n  bootstrap:\n    sshAuthorizedKeys: [\"{KEY}\"]\n"
    ))
    .unwrap()
}

#[test]
fn one_mac_on_two_machines_is_a_conflict_whatever_its_case() {
    let ms = [
        with_mac("a", "10.0.0.1", "BC:24:11:5E:00:01"),
        with_mac("b", "10.0.0.2", "bc:24:11:5e:00:01"),
        with_mac("c", "10.0.0.3", "BC:24:11:5E:00:02"),
    ];
    let files = ["a.yaml", "b.yaml", "c.yaml"];
    let members: Vec<Member> = ms
        .iter()
        .zip(files)
        .map(|(machine, file)| Member { file, machine })
        .collect();
    let lines: Vec<String> = conflicts(&members)
        .iter()
        .map(|c| c.diagnostic.located(files[c.member]))
        .collect();
    assert_eq!(
        lines,
        [
            "a.yaml:11:17: spec.network.macAddress: MAC address bc:24:11:5e:00:01 is also used by b.yaml:11:17 (give every machine its own MAC address, e.g. change its last octet)",
            "b.yaml:11:17: spec.network.macAddress: MAC address bc:24:11:5e:00:01 is also used by a.yaml:11:17 (give every machine its own MAC address, e.g. change its last octet)",
        ]
    );
}

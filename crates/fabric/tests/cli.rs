//! The `fabric` binary as users run it: render, seed and validate on real
//! files, checking output, exit codes and that refusals write nothing.

mod fabric_binary;
use fabric_binary::{fabric, repo, text};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s alice@laptop";

/// Golden files: every example's rendered output is checked in under
/// examples/machines/golden/<name>/. `UPDATE_GOLDEN=1 cargo test -p fabric
/// --test cli golden` rewrites them after an intended change.
#[test]
fn golden_render_of_every_example() {
    let examples = repo().join("examples/machines");
    let mut names: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "yaml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert_eq!(names, ["basic", "dns01", "docker01"]);
    for name in names {
        let out = tempfile::tempdir().unwrap();
        let r = fabric(&[
            "render",
            &format!("examples/machines/{name}.yaml"),
            "--dir",
            out.path().to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{name}: {}", text(&r.stderr));
        let golden = examples.join("golden").join(&name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let _ = std::fs::remove_dir_all(&golden);
            std::fs::create_dir_all(&golden).unwrap();
            for f in std::fs::read_dir(out.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), golden.join(f.file_name())).unwrap();
            }
        }
        let mut produced: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        produced.sort();
        let mut expected: Vec<String> = std::fs::read_dir(&golden)
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        expected.sort();
        assert_eq!(
            produced,
            expected,
            "{name}: file set differs from {}",
            golden.display()
        );
        for f in produced {
            let got = std::fs::read_to_string(out.path().join(&f)).unwrap();
            let want = std::fs::read_to_string(golden.join(&f)).unwrap();
            assert_eq!(
                got, want,
                "{name}/{f} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
            );
        }
        // Printing without --dir gives the same user-data.
        let printed = fabric(&["render", &format!("examples/machines/{name}.yaml")]);
        assert_eq!(
            text(&printed.stdout),
            std::fs::read_to_string(golden.join("user-data")).unwrap()
        );
    }
    // Static machines get a network-config; the DHCP one does not.
    assert!(examples.join("golden/dns01/network-config").exists());
    assert!(examples.join("golden/docker01/network-config").exists());
    assert!(!examples.join("golden/basic/network-config").exists());
}

#[test]
fn render_refuses_an_invalid_machine_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("dns01.yaml");
    let good = std::fs::read_to_string(repo().join("examples/machines/dns01.yaml")).unwrap();
    std::fs::write(&bad, good.replace("gateway: 10.0.1.1", "gateway: 10.0.2.1")).unwrap();
    let out = dir.path().join("seed");
    let r = fabric(&[
        "render",
        bad.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r.stderr);
    assert!(
        err.contains("dns01.yaml:18:14: spec.network.gateway: 10.0.2.1 is outside 10.0.1.0/24"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "render wrote {} for an invalid machine",
        out.display()
    );
    let iso = dir.path().join("seed.iso");
    let r = fabric(&[
        "seed",
        bad.to_str().unwrap(),
        "--iso",
        iso.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("spec.network.gateway"));
    assert!(!iso.exists());
}

#[test]
fn render_dir_replaces_a_stale_network_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seed");
    assert!(fabric(&[
        "render",
        "examples/machines/dns01.yaml",
        "--dir",
        out.to_str().unwrap()
    ])
    .status
    .success());
    assert!(out.join("network-config").exists());
    assert!(fabric(&[
        "render",
        "examples/machines/basic.yaml",
        "--dir",
        out.to_str().unwrap()
    ])
    .status
    .success());
    assert!(!out.join("network-config").exists());
    assert!(std::fs::read_to_string(out.join("meta-data"))
        .unwrap()
        .contains("basic"));
}

#[test]
fn secret_keys_are_required_when_referenced_and_never_printed_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let machine = dir.path().join("m.yaml");
    std::fs::write(
        &machine,
        "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata: {name: web, namespace: apps}\nspec:\n  hostname: web\n  class: small\n  image: nixos-template\n  nix: {flakeRef: 'github:org/fleet#web'}\n  bootstrap:\n    sshAuthorizedKeysSecretRef: {name: admin-keys}\n",
    )
    .unwrap();
    let r = fabric(&["render", machine.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stderr).contains("--secret"), "{}", text(&r.stderr));

    let secret = dir.path().join("secret.yaml");
    std::fs::write(&secret, format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: admin-keys}}\nstringData:\n  authorized_keys: |\n    {KEY}\n")).unwrap();
    let r = fabric(&[
        "render",
        machine.to_str().unwrap(),
        "--secret",
        secret.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(text(&r.stdout).contains("alice@laptop"));

    // base64 data with a private key pasted by mistake: refused, not echoed.
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n";
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(private);
    std::fs::write(&secret, format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: admin-keys}}\ndata:\n  authorized_keys: {b64}\n")).unwrap();
    let r = fabric(&[
        "render",
        machine.to_str().unwrap(),
        "--secret",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r.stderr);
    assert!(
        err.contains("secret.yaml:5:20: data.authorized_keys: line 1: is a private key"),
        "{err}"
    );
    assert!(
        !err.contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmU") && !err.contains(&b64),
        "key material leaked: {err}"
    );
}

#[test]
fn validate_collects_every_problem_across_files_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("examples/machines/dns01.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), &base).unwrap();
    std::fs::write(
        dir.path().join("nested/b.yml"),
        base.replace("name: dns01\n  namespace", "name: dns01b\n  namespace"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nested/c.yaml"),
        base.replace("cidr: 24", "cidr: 40")
            .replace("hostname: dns01", "hostname: dns03"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let r = fabric(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    let out = text(&r.stdout);
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("nested/b.yml").display().to_string();
    let c = dir.path().join("nested/c.yaml").display().to_string();
    assert!(out.contains(&format!("{a}:8:13: spec.hostname: hostname dns01 (FQDN dns01.homelab.local) is also used by {b}:8:13")), "{out}");
    assert!(out.contains(&format!("{b}:8:13: spec.hostname")), "{out}");
    assert!(
        out.contains(&format!(
            "{a}:16:9: spec.network.ip: static address 10.0.1.10 is also used by {b}:16:9"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{c}:17:11: spec.network.cidr: 40 is out of range (must be between 1 and 32)"
        )),
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");

    let ok = fabric(&["validate", "examples/machines"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let missing = fabric(&["validate", "does/not/exist"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// The bundled examples are one fleet: together they must validate, with
/// every Machine and XMachine in them counted.
#[test]
fn every_bundled_example_validates_together() {
    let mut manifests = 0;
    for dir in ["examples", "example"] {
        let mut stack = vec![repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "yaml") {
                    let t = std::fs::read_to_string(&path).unwrap();
                    manifests += t
                        .lines()
                        .filter(|l| *l == "kind: Machine" || *l == "kind: XMachine")
                        .count();
                }
            }
        }
    }
    let r = fabric(&["validate", "examples", "example", "--output", "json"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stdout));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["machines"], manifests, "{v}");
    assert!(manifests >= 5);
}

#[test]
fn validate_json_output_is_typed() {
    let r = fabric(&["validate", "examples/machines", "--output", "json"]);
    assert!(r.status.success());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["machines"], 3);
    assert_eq!(v["valid"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn seed_writes_a_reproducible_image() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.iso");
    let b = dir.path().join("b.iso");
    for p in [&a, &b] {
        let r = fabric(&[
            "seed",
            "examples/machines/docker01.yaml",
            "--output",
            p.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", text(&r.stderr));
    }
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(a.len() > 32 * 1024);
    assert!(a == b, "two seeds of the same machine differ");
}

#[test]
fn help_teaches_every_command_within_100_columns() {
    for cmd in [
        "render",
        "seed",
        "validate",
        "compose",
        "function",
        "bootstrap",
        "agent",
        "status",
        "doctor",
    ] {
        let r = fabric(&[cmd, "--help"]);
        assert!(r.status.success(), "{cmd} --help failed");
        let help = text(&r.stdout);
        assert!(
            help.lines().count() > 5,
            "{cmd} --help is too thin:\n{help}"
        );
        assert!(!help.contains("not implemented"), "{cmd} is still a stub");
        for line in help.lines() {
            assert!(
                line.chars().count() <= 100,
                "{cmd} --help line too wide: {line}"
            );
        }
    }
}

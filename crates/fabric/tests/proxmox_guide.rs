//! docs/proxmox-template.md as a user follows it, and the template it
//! builds as the function composes against it.
//!
//! - Every YAML block of the guide goes through the real `fabric validate`
//!   and `fabric compose`, stage by stage as in a cluster, so the guide's
//!   Input and Machine cannot drift from what the function accepts, nor
//!   from the storage the guide restores the template to.
//! - The disk the template boots from is read with real Nix from
//!   `nix/proxmox-template.nix` and must be the disk the Input's default
//!   names and every backend resizes.

use std::process::Command;

use fabric_function::input::{DiskInterface, DEFAULT_BOOT_DISK};
use serde_json::{json, Value as Json};

mod fabric_binary;
use fabric_binary::{fabric, repo, text};

/// The fenced blocks of a Markdown file with the given info string.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Outside a block: None; inside: Some(Some(body)) when collecting,
    // Some(None) in a block of another language.
    let mut current: Option<Option<String>> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                let info = line.trim_start().trim_start_matches('`').trim();
                current = Some((info == lang).then(String::new));
            }
            (None, false) => {}
            (Some(block), true) => {
                if let Some(body) = block.take() {
                    out.push(body);
                }
                current = None;
            }
            (Some(Some(body)), false) => {
                body.push_str(line);
                body.push('\n');
            }
            (Some(None), false) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ``` block");
    out
}

/// `fabric compose` with its arguments; panics with stderr unless it exits 0.
/// Returns the composed documents and the status line's JSON.
fn compose(args: &[&str]) -> (Vec<Json>, Json) {
    let mut all = vec!["compose"];
    all.extend_from_slice(args);
    let out = fabric(&all);
    assert!(
        out.status.success(),
        "fabric {}: {}",
        all.join(" "),
        text(&out.stderr)
    );
    let docs: Vec<Json> =
        serde_saphyr::from_str_multiple(&text(&out.stdout)).expect("compose prints YAML");
    let stderr = text(&out.stderr);
    let status = stderr
        .lines()
        .find_map(|l| l.strip_prefix("status: "))
        .unwrap_or_else(|| panic!("no status line in:\n{stderr}"));
    (
        docs,
        serde_json::from_str(status).expect("the status line is JSON"),
    )
}

fn kinds(docs: &[Json]) -> Vec<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

/// The composed snippets as Crossplane would observe them once the
/// provider has uploaded them: Ready, with their volume id.
fn observed_ready(docs: &[Json]) -> String {
    let mut out = String::new();
    for doc in docs.iter().filter(|d| d["kind"] == "EnvironmentFile") {
        let fp = &doc["spec"]["forProvider"];
        let file = &doc["spec"]["initProvider"]["sourceRaw"][0]["fileName"];
        let mut doc = doc.clone();
        doc["status"] = json!({
            "atProvider": {
                "id": format!("{}:snippets/{}", fp["datastoreId"].as_str().unwrap(), file.as_str().unwrap()),
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available"}],
        });
        out.push_str("---\n");
        out.push_str(&doc.to_string());
        out.push('\n');
    }
    out
}

fn vm(docs: &[Json]) -> &Json {
    docs.iter()
        .find(|d| d["kind"] == "EnvironmentVM")
        .unwrap_or_else(|| panic!("no EnvironmentVM in {:?}", kinds(docs)))
}

#[test]
fn every_yaml_block_of_the_template_guide_validates_and_composes() {
    let guide = std::fs::read_to_string(repo().join("docs/proxmox-template.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut input = None;
    let mut machines = Vec::new();
    for (i, block) in blocks(&guide, "yaml").into_iter().enumerate() {
        let doc: Json = serde_saphyr::from_str(&block)
            .unwrap_or_else(|e| panic!("YAML block {i} of the guide does not parse: {e}\n{block}"));
        let path = dir.path().join(format!("block{i}.yaml"));
        std::fs::write(&path, &block).unwrap();
        match doc["kind"].as_str() {
            Some("Input") => {
                assert!(input.is_none(), "the guide shows two Inputs");
                input = Some((path, doc));
            }
            Some("Machine") => machines.push((path, doc)),
            other => panic!(
                "YAML block {i} of the guide is a {other:?}; teach this test how to check it\n{block}"
            ),
        }
    }
    let (input_path, input) = input.expect("the guide shows the function's Input");
    assert!(!machines.is_empty(), "the guide shows a Machine");

    // The storage the guide restores the template to is the one its Input
    // sends Machines to.
    let restore_storage = blocks(&guide, "sh")
        .iter()
        .flat_map(|b| {
            let joined = b.replace("\\\n", " ");
            joined
                .lines()
                .filter(|l| l.trim_start().starts_with("qmrestore "))
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let at = words.iter().position(|w| *w == "--storage")?;
                    words.get(at + 1).map(|s| s.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert_eq!(
        restore_storage.len(),
        1,
        "the guide should restore the template once, with --storage"
    );
    let template_id = input["templates"]["nixos-template"]["vmId"].clone();

    for (path, machine) in &machines {
        let path = path.to_str().unwrap();
        let input_path = input_path.to_str().unwrap();
        let v = fabric(&["validate", path]);
        assert!(
            v.status.success(),
            "fabric validate on the guide's Machine: {}{}",
            text(&v.stdout),
            text(&v.stderr)
        );

        let (first, status) = compose(&[path, "--input", input_path]);
        assert_eq!(status["phase"], "WaitingForSnippet", "{status}");
        assert!(
            kinds(&first).iter().all(|k| *k == "EnvironmentFile"),
            "{:?}",
            kinds(&first)
        );

        let observed = dir.path().join("observed.yaml");
        std::fs::write(&observed, observed_ready(&first)).unwrap();
        let (second, status) = compose(&[
            path,
            "--input",
            input_path,
            "--observed",
            observed.to_str().unwrap(),
        ]);
        assert_eq!(status["phase"], "Provisioning", "{status}");
        let vm = vm(&second);
        let clone = &vm["spec"]["initProvider"]["clone"][0];
        assert_eq!(clone["vmId"], template_id, "{vm}");
        assert_eq!(
            clone["datastoreId"].as_str(),
            Some(restore_storage[0].as_str()),
            "the guide restores the template to {} but its Machine is cloned elsewhere",
            restore_storage[0]
        );
        let disk = &vm["spec"]["forProvider"]["disk"][0];
        assert_eq!(disk["interface"], DEFAULT_BOOT_DISK, "{vm}");
        assert_eq!(disk["size"], machine["spec"]["disk"]["size"], "{vm}");
    }
}

/// `proxmox` of nix/proxmox-template.nix, evaluated with real Nix. The
/// file is a plain module (an attribute set), so no nixpkgs is needed.
fn template_proxmox_options() -> Json {
    let out = Command::new("nix-instantiate")
        .current_dir(repo())
        .env(
            "NIX_CONFIG",
            "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false",
        )
        .args([
            "--readonly-mode",
            "--eval",
            "--strict",
            "--json",
            "--expr",
            "(import ./nix/proxmox-template.nix).proxmox",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nix-instantiate ({e}); the Nix tests need Nix (Debian: apt-get install nix-bin)")
        });
    assert!(
        out.status.success(),
        "nix/proxmox-template.nix: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix-instantiate --json prints JSON")
}

#[test]
fn the_disk_the_template_boots_from_is_the_one_every_backend_resizes() {
    let proxmox = template_proxmox_options();
    let qemu = proxmox["qemuConf"].as_object().expect("proxmox.qemuConf");
    let slots = DiskInterface::all();
    let disks: Vec<&String> = qemu.keys().filter(|k| slots.contains(k)).collect();
    assert_eq!(
        disks.len(),
        1,
        "proxmox.qemuConf should name exactly one disk, found {disks:?}"
    );
    let disk = disks[0].as_str();
    assert_eq!(
        qemu.get("boot").and_then(Json::as_str),
        Some(format!("order={disk}").as_str()),
        "the template should boot from its disk"
    );
    assert_ne!(
        proxmox["cloudInit"]["device"].as_str(),
        Some(disk),
        "the cloud-init drive cannot share the boot disk's slot"
    );
    assert_eq!(
        disk, DEFAULT_BOOT_DISK,
        "the template boots from {disk}, the Input's default bootDisk is {DEFAULT_BOOT_DISK}"
    );

    // The examples' Input leaves bootDisk out, so both backends compose the
    // default: the disk read from the template above.
    let observed = ["--observed", "example/observed/snippet-ready.yaml"];
    let mut args = vec![
        "example/xr.yaml",
        "--input",
        "example/composition.yaml",
        "--secret",
        "example/secret.yaml",
    ];
    args.extend_from_slice(&observed);
    let (docs, _) = compose(&args);
    assert_eq!(
        vm(&docs)["spec"]["forProvider"]["disk"][0]["interface"],
        disk
    );

    let (docs, _) = compose(&[
        "example/xr.yaml",
        "--input",
        "example/composition-terraform.yaml",
        "--secret",
        "example/secret.yaml",
    ]);
    let ws = docs
        .iter()
        .find(|d| d["kind"] == "Workspace")
        .expect("a Workspace");
    let module: Json =
        serde_json::from_str(ws["spec"]["forProvider"]["module"].as_str().unwrap()).unwrap();
    assert_eq!(
        module["resource"]["proxmox_virtual_environment_vm"]["machine"]["disk"]["interface"],
        disk
    );
}

//! What `fabric compose` gives for the bundled examples, against the
//! providers' real CRDs (oracles/crds), through the project's
//! `oracles/check-composed`: the structural schema applied strictly, as
//! `kubectl --validate=strict` would (an unknown field is an error), and
//! upjet's required-parameter rules. The checker must also refuse what the
//! API server would refuse, or its accepting the examples proves nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `fabric compose` of the example XR `xr` with `args`, as YAML.
fn compose(xr: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(root())
        .arg("compose")
        .arg(xr)
        .args(args)
        .output()
        .expect("run fabric compose");
    assert!(
        out.status.success(),
        "fabric compose {xr} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 YAML")
}

/// The checker's verdict on `yaml`: its exit code and what it printed.
fn check_composed(yaml: &str) -> (Option<i32>, String) {
    let mut child = Command::new(root().join("oracles/check-composed"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oracles/check-composed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

const BPG_VM: [&str; 6] = [
    "--input",
    "example/composition.yaml",
    "--secret",
    "example/secret.yaml",
    "--observed",
    "example/observed/snippet-ready.yaml",
];

#[test]
fn composed_examples_are_valid_for_the_provider_crds() {
    for (xr, args, kinds) in [
        // user-data, meta-data and network-config snippets, and the VM.
        ("example/xr.yaml", &BPG_VM[..], 4),
        (
            "example/xr.yaml",
            &[
                "--input",
                "example/composition-terraform.yaml",
                "--secret",
                "example/secret.yaml",
            ][..],
            1,
        ),
        (
            "example/xmachine.yaml",
            &[
                "--input",
                "example/composition-xmachine.yaml",
                "--observed",
                "example/observed/xmachine-snippet-ready.yaml",
            ][..],
            // A DHCP machine: user-data and meta-data snippets, and the VM.
            3,
        ),
    ] {
        let (code, text) = check_composed(&compose(xr, args));
        assert_eq!(code, Some(0), "{xr} {args:?}:\n{text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("valid ")).count(),
            kinds,
            "{xr} {args:?}:\n{text}"
        );
    }
}

#[test]
fn check_composed_refuses_what_the_api_server_refuses() {
    let good = compose("example/xr.yaml", &BPG_VM);
    for (from, to, want) in [
        // A misspelt field: unknown, and the required one is then missing.
        (
            "nodeName: pve1",
            "nodeNam: pve1",
            "spec.forProvider.nodeName is a required parameter",
        ),
        (
            "nodeName: pve1",
            "nodeNam: pve1",
            "'nodeNam' was unexpected",
        ),
        // A string where the schema wants a number.
        (
            "dedicated: 4096",
            "dedicated: lots",
            "'lots' is not of type",
        ),
        // A version the CRD does not have.
        (
            "virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1alpha1",
            "virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1beta9",
            "no CRD here serves virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1beta9",
        ),
    ] {
        assert!(good.contains(from), "the example no longer has {from:?}");
        let (code, text) = check_composed(&good.replace(from, to));
        assert_eq!(code, Some(1), "{from:?} -> {to:?} must be refused:\n{text}");
        assert!(
            text.contains("INVALID") && text.contains(want),
            "{from:?} -> {to:?}: want {want:?} in:\n{text}"
        );
    }
}

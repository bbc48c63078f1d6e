//! The checked-in XRDs and input CRD are what the Rust types generate.
//! `UPDATE_XRD=1 cargo test -p fabric-function --test tests xrd` rewrites them.

use fabric_function::xrd;
use fabric_model::MachineKind;
use serde_json::{json, Value as Json};

use crate::support::workspace;

#[test]
fn xrd_checked_in_files_match_the_generated_ones() {
    let files = xrd::files().unwrap_or_else(|e| panic!("{e}"));
    let update = std::env::var_os("UPDATE_XRD").is_some();
    let mut stale = Vec::new();
    for (path, text) in files {
        let full = workspace().join(path);
        if update {
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&full, &text).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        } else if std::fs::read_to_string(&full).ok().as_deref() != Some(text.as_str()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the Rust types generate; run: UPDATE_XRD=1 cargo test -p fabric-function --test tests xrd"
    );
}

#[test]
fn xrd_schemas_are_structural() {
    for kind in [MachineKind::Machine, MachineKind::XMachine] {
        let x = xrd::machine_xrd(kind);
        let schema = &x["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_eq!(xrd::structural_problems(schema, ""), Vec::<String>::new());
    }
    let crd = xrd::input_crd();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(xrd::structural_problems(schema, ""), Vec::<String>::new());
}

#[test]
fn xrd_keeps_descriptions_defaults_ranges_patterns_and_enums() {
    let spec = xrd::spec_schema();
    let p = |ptr: &str| spec.pointer(ptr).cloned().unwrap_or(Json::Null);
    assert!(p("/properties/hostname/description")
        .as_str()
        .is_some_and(|d| d.contains("RFC 1123")));
    assert_eq!(
        p("/properties/hostname/pattern"),
        json!("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    );
    assert_eq!(p("/properties/cpu/properties/cores/minimum"), json!(1));
    assert_eq!(p("/properties/cpu/properties/cores/maximum"), json!(128));
    assert_eq!(p("/properties/cpu/properties/cores/format"), Json::Null);
    assert_eq!(p("/properties/cpu/properties/sockets/default"), json!(1));
    assert_eq!(
        p("/properties/network/properties/dns/default"),
        json!(["1.1.1.1", "8.8.8.8"])
    );
    assert_eq!(
        p("/properties/class/enum"),
        json!(["small", "medium", "large"])
    );
    assert_eq!(
        p("/properties/tags/additionalProperties"),
        json!({"type": "string"})
    );
    assert_eq!(p("/additionalProperties"), Json::Null);
    assert_eq!(
        p("/required"),
        json!(["hostname", "image", "nix"])
            .as_array()
            .map(|_| p("/required"))
            .unwrap_or_default()
    );
}

#[test]
fn xrd_declares_every_status_field_the_function_writes() {
    let status = xrd::status_schema();
    let props = status["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let full = fabric_model::status::MachineStatus {
        phase: Some(fabric_model::status::Phase::Running),
        vm_id: Some(100),
        node: Some("n".into()),
        ip_addresses: vec!["10.0.0.1".into()],
        user_data_file_id: Some("f".into()),
        instance_id: Some("i".into()),
    };
    let written = serde_json::to_value(full).unwrap_or_default();
    for key in written
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        assert!(
            props.contains_key(&key),
            "status.{key} is written but not declared"
        );
    }
    assert_eq!(
        status.pointer("/properties/phase/enum"),
        Some(&json!([
            "WaitingForKeys",
            "WaitingForSnippet",
            "Provisioning",
            "Running"
        ]))
    );
    // And over the wire: the status of a real response uses only declared fields.
    let rsp = fabric_function::run(&crate::support::request(
        &crate::support::machine(),
        Some(&crate::support::input("bpg")),
        &[],
    ));
    let st = crate::support::xr_status(&rsp);
    for key in st
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        assert!(
            props.contains_key(&key),
            "status.{key} is written but not declared"
        );
    }
}

#[test]
fn xrd_scopes_and_names_follow_crossplane_v2() {
    let v2 = xrd::machine_xrd(MachineKind::Machine);
    assert_eq!(v2["apiVersion"], "apiextensions.crossplane.io/v2");
    assert_eq!(v2["spec"]["scope"], "Namespaced");
    assert_eq!(v2["spec"]["group"], "infra.kubelize.io");
    assert_eq!(v2["spec"]["names"]["kind"], "Machine");
    assert_eq!(v2["spec"]["versions"][0]["name"], "v1alpha1");
    assert!(v2["spec"].get("claimNames").is_none());
    let legacy = xrd::machine_xrd(MachineKind::XMachine);
    // Crossplane's v2 XRD CRD refuses LegacyCluster and claimNames (a CEL
    // rule); only apiextensions.crossplane.io/v1 offers claims.
    assert_eq!(legacy["apiVersion"], "apiextensions.crossplane.io/v1");
    assert_eq!(legacy["spec"]["scope"], "LegacyCluster");
    assert_eq!(
        legacy["spec"]["claimNames"],
        json!({"kind": "Machine", "plural": "machines"})
    );
    assert_eq!(legacy["spec"]["names"]["kind"], "XMachine");
    assert_eq!(
        legacy["spec"]["versions"][0]["schema"], v2["spec"]["versions"][0]["schema"],
        "the same spec and status"
    );
}

/// Crossplane's YAML loaders (render's observed and required resources,
/// validate) split files at `---` and read a comment-only part as an
/// object with no kind, name or namespace; render refused the example
/// observed files for it ("observed resource  is not in the same namespace
/// as the XR").
#[test]
fn shipped_yaml_has_no_document_without_content() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        "example",
        "example/observed",
        "apis/machines",
        "apis/xmachines",
        "package",
        "package/input",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        for (i, part) in text.split("\n---\n").enumerate() {
            let part = part.strip_prefix("---\n").unwrap_or(part);
            let content = part
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            assert!(
                content,
                "{}: document {} holds only comments or nothing; put the comment above the first document, without a --- before it",
                path.display(),
                i + 1
            );
        }
    }
}

//! Requests, fixtures and servers shared by the tests.

#![allow(dead_code)]

use std::collections::HashMap;

use function_sdk_rust::proto::v1::{
    RequestMeta, Resource, Resources, RunFunctionRequest, RunFunctionResponse, Severity, State,
};
use function_sdk_rust::resource::{json_to_struct, struct_to_json};
use serde_json::{json, Value as Json};

pub const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgSMbuBprsvdhMrTvUN6Wb+dCh8clQi5rzAf/8LwMXb alice@laptop";
/// The body of the Secret's key, distinctive enough to search for.
pub const SECRET_KEY_BODY: &str =
    "AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s";
pub fn secret_key_line() -> String {
    format!("ssh-ed25519 {SECRET_KEY_BODY} bob@desk")
}

/// A namespaced Machine as Crossplane sends it.
pub fn machine() -> Json {
    json!({
        "apiVersion": "infra.kubelize.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "web01", "namespace": "team-a", "uid": "6c1d1d2c-1111-4a4a-9b9b-000000000001", "generation": 1},
        "spec": {
            "hostname": "web01",
            "domain": "lab.example.org",
            "cpu": {"cores": 2},
            "memory": {"size": 4096},
            "disk": {"size": 40},
            "image": "nixos-template",
            "network": {"ip": "10.0.1.10", "cidr": 24, "gateway": "10.0.1.1", "macAddress": "bc:24:11:5e:00:01"},
            "proxmox": {"vlan": 20},
            "nix": {"flakeRef": "git+https://github.com/kubelize/fleet#web01"},
            "bootstrap": {"adminUser": "ops", "sshAuthorizedKeys": [KEY_A]},
            "tags": {"env": "prod"},
            "crossplane": {"compositionRef": {"name": "machines"}},
        },
    })
}

/// The same machine taking its keys from a Secret only.
pub fn machine_with_secret() -> Json {
    let mut m = machine();
    m["spec"]["bootstrap"] = json!({"sshAuthorizedKeysSecretRef": {"name": "admin-keys"}});
    m
}

/// The same spec as a legacy cluster-scoped XMachine made through a claim.
pub fn xmachine() -> Json {
    let mut m = machine();
    m["kind"] = json!("XMachine");
    m["metadata"] = json!({
        "name": "web01-x7k2p",
        "uid": "6c1d1d2c-1111-4a4a-9b9b-000000000002",
        "labels": {"crossplane.io/claim-namespace": "team-a", "crossplane.io/claim-name": "web01"},
    });
    m
}

pub fn input(backend: &str) -> Json {
    json!({
        "apiVersion": "fabric.kubelize.io/v1beta1",
        "kind": "Input",
        "backend": backend,
        "providerConfigRef": {"kind": "ClusterProviderConfig", "name": "default"},
        "proxmox": {"node": "pve1", "storage": "local-zfs", "bridge": "vmbr0", "snippetDatastore": "local"},
        "templates": {"nixos-template": {"vmId": 9000}},
        "bootstrap": {"fabricFlake": "github:kubelize/fabric"},
    })
}

pub fn secret(namespace: &str, name: &str, lines: &str) -> Json {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"authorized_keys": encode(lines.as_bytes())},
    })
}

pub fn resource(object: &Json) -> Resource {
    Resource {
        resource: object.as_object().map(json_to_struct),
        ..Default::default()
    }
}

/// A request with the XR, the input and observed composed resources.
pub fn request(xr: &Json, input: Option<&Json>, observed: &[(&str, Json)]) -> RunFunctionRequest {
    RunFunctionRequest {
        meta: Some(RequestMeta {
            tag: "test".into(),
            capabilities: vec![],
        }),
        observed: Some(State {
            composite: Some(resource(xr)),
            resources: observed
                .iter()
                .map(|(n, o)| (n.to_string(), resource(o)))
                .collect(),
        }),
        desired: Some(State {
            composite: None,
            resources: HashMap::new(),
        }),
        input: input.and_then(Json::as_object).map(json_to_struct),
        ..Default::default()
    }
}

/// Supplies required resources under `name`.
pub fn with_required(
    mut req: RunFunctionRequest,
    name: &str,
    items: &[Json],
) -> RunFunctionRequest {
    req.required_resources.insert(
        name.to_string(),
        Resources {
            items: items.iter().map(resource).collect(),
        },
    );
    req
}

/// Marks an object Ready=True and sets `status.atProvider`.
pub fn observed_ready(desired: &Json, at_provider: Json) -> Json {
    let mut o = desired.clone();
    o["metadata"] = json!({"name": "web01-abcde", "namespace": "team-a"});
    o["status"] = json!({
        "atProvider": at_provider,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2026-11-27T10:00:00Z"}],
    });
    o
}

/// Marks an object as created but not Ready.
pub fn observed_creating(desired: &Json) -> Json {
    let mut o = desired.clone();
    o["metadata"] = json!({"name": "web01-abcde", "namespace": "team-a"});
    o["status"] = json!({
        "conditions": [{"type": "Ready", "status": "False", "reason": "Creating", "lastTransitionTime": "2026-11-27T10:00:00Z"}],
    });
    o
}

pub fn desired(rsp: &RunFunctionResponse, name: &str) -> Option<Json> {
    rsp.desired
        .as_ref()?
        .resources
        .get(name)?
        .resource
        .as_ref()
        .map(struct_to_json)
}

pub fn desired_ready(rsp: &RunFunctionResponse, name: &str) -> Option<i32> {
    rsp.desired.as_ref()?.resources.get(name).map(|r| r.ready)
}

pub fn xr_status(rsp: &RunFunctionResponse) -> Json {
    rsp.desired
        .as_ref()
        .and_then(|d| d.composite.as_ref())
        .and_then(|c| c.resource.as_ref())
        .map(struct_to_json)
        .and_then(|x| x.get("status").cloned())
        .unwrap_or(Json::Null)
}

pub fn xr_ready(rsp: &RunFunctionResponse) -> Option<i32> {
    rsp.desired.as_ref()?.composite.as_ref().map(|c| c.ready)
}

pub fn fatal(rsp: &RunFunctionResponse) -> Option<String> {
    rsp.results
        .iter()
        .find(|r| r.severity == Severity::Fatal as i32)
        .map(|r| r.message.clone())
}

pub fn names(rsp: &RunFunctionResponse) -> Vec<String> {
    let mut n: Vec<String> = rsp
        .desired
        .as_ref()
        .map(|d| d.resources.keys().cloned().collect())
        .unwrap_or_default();
    n.sort();
    n
}

/// Every human-readable string a response carries: results, conditions.
pub fn messages(rsp: &RunFunctionResponse) -> String {
    let mut out = String::new();
    for r in &rsp.results {
        out.push_str(&r.message);
        out.push('\n');
        out.push_str(r.reason.as_deref().unwrap_or(""));
        out.push('\n');
    }
    for c in &rsp.conditions {
        out.push_str(&c.reason);
        out.push('\n');
        out.push_str(c.message.as_deref().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The workspace root (for example/, apis/ and package/).
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `observed` plus every snippet besides user-data that `first` composed
/// (meta-data, network-config), observed Ready with the volume id the
/// provider reports, unless `observed` already has it.
pub fn with_snippets(
    first: &RunFunctionResponse,
    observed: &[(&'static str, Json)],
) -> Vec<(&'static str, Json)> {
    let mut all = observed.to_vec();
    for name in [
        fabric_function::bpg::META_DATA,
        fabric_function::bpg::NETWORK_CONFIG,
    ] {
        if all.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let Some(d) = desired(first, name) else {
            continue;
        };
        let id = format!(
            "{}:snippets/{}",
            d["spec"]["forProvider"]["datastoreId"]
                .as_str()
                .unwrap_or_default(),
            d["spec"]["initProvider"]["sourceRaw"][0]["fileName"]
                .as_str()
                .unwrap_or_default()
        );
        all.push((name, observed_ready(&d, json!({ "id": id }))));
    }
    all
}

/// The XR with `status.phase` set, as an earlier call left it.
pub fn with_phase(mut xr: Json, phase: &str) -> Json {
    xr["status"] = json!({ "phase": phase });
    xr
}

/// Captures every log line at TRACE while `f` runs.
pub fn logs_of(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().map(|v| v.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Asserts that `rsp` asks, under `requirement`, for the Secret `name` in
/// `namespace`, by name; `context` starts each failure message.
#[track_caller]
pub fn assert_requires_secret(
    rsp: &RunFunctionResponse,
    requirement: &str,
    namespace: &str,
    name: &str,
    context: &str,
) {
    let sel = rsp
        .requirements
        .as_ref()
        .and_then(|r| r.resources.get(requirement))
        .cloned()
        .unwrap_or_else(|| panic!("{context}: does not ask for {requirement}"));
    assert_eq!(
        (sel.api_version.as_str(), sel.kind.as_str()),
        ("v1", "Secret"),
        "{context}"
    );
    assert_eq!(sel.namespace.as_deref(), Some(namespace), "{context}");
    assert_eq!(
        sel.r#match,
        Some(function_sdk_rust::proto::v1::resource_selector::Match::MatchName(name.into())),
        "{context}"
    );
}

//! The fleet credential (`spec.nix.credentialsSecretRef`): asked for like
//! the SSH keys Secret, read from the Machine's own namespace only, and its
//! bytes found nowhere in the response but the user-data snippet, nor in
//! the logs, on both backends.

use fabric_function::{bpg, credential, run, run_uncached, terraform};
use function_sdk_rust::proto::v1::{RunFunctionRequest, RunFunctionResponse};
use function_sdk_rust::resource::{json_to_struct, struct_to_json};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::support::*;

const DEPLOY_KEY: &str = include_str!("../../../examples/private-fleet/db01-deploy-key.yaml");
const BACKENDS: [&str; 2] = ["bpg", "terraform"];

/// The machine of the tests, fetching a private fleet over SSH.
fn ssh_machine() -> Json {
    let mut m = machine();
    m["spec"]["nix"] = json!({
        "flakeRef": "git+ssh://git@git.example.org/infra/fleet#web01",
        "credentialsSecretRef": {"name": "fleet-deploy-key"},
    });
    m
}

/// The same machine on a private GitHub repository, with a token.
fn token_machine() -> Json {
    let mut m = machine();
    m["spec"]["nix"] = json!({
        "flakeRef": "github:kubelize/fleet-private#web01",
        "credentialsSecretRef": {"name": "fleet-token"},
    });
    m
}

/// The example's deploy key Secret, as the API server returns it, in `namespace`.
fn key_secret(namespace: &str) -> Json {
    let mut s: Json = serde_saphyr::from_str(DEPLOY_KEY).unwrap();
    s["metadata"]["namespace"] = json!(namespace);
    s
}

fn token_secret(namespace: &str, tokens: &str) -> Json {
    use base64::Engine;
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fleet-token", "namespace": namespace},
        "data": {"access-tokens": base64::engine::general_purpose::STANDARD.encode(tokens)},
    })
}

/// The lines of the key body: any of them in a response is a leak.
fn key_lines() -> Vec<String> {
    let s = key_secret("x");
    s["stringData"]["ssh-privatekey"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

fn requests(xr: &Json, backend: &str, secret: &Json) -> Vec<RunFunctionRequest> {
    let inp = input(backend);
    let base = request(xr, Some(&inp), &[]);
    let with = with_required(
        base.clone(),
        credential::REQUIREMENT,
        std::slice::from_ref(secret),
    );
    let first = run_uncached(&with);
    // Later stages: the snippet (or workspace) observed, then the VM.
    let mut later = Vec::new();
    for (name, d) in first.desired.iter().flat_map(|d| d.resources.iter()) {
        if let Some(obj) = d.resource.as_ref().map(struct_to_json) {
            later.push((
                if name == bpg::SNIPPET {
                    bpg::SNIPPET
                } else if name == terraform::WORKSPACE {
                    terraform::WORKSPACE
                } else {
                    continue;
                },
                observed_ready(&obj, json!({"id": "local:snippets/web01-user-data.yaml"})),
            ));
        }
    }
    let observed = with_snippets(&first, &later);
    let second = with_required(
        request(xr, Some(&inp), &observed),
        credential::REQUIREMENT,
        std::slice::from_ref(secret),
    );
    // A first call of a reconcile once the resources exist: no Secret sent.
    let third = request(
        &with_phase(xr.clone(), "Provisioning"),
        Some(&inp),
        &observed,
    );
    vec![base, with, second, third]
}

/// A string that is the user-data snippet, or holds it (terraform's module).
fn scrub(v: &mut Json) -> usize {
    match v {
        Json::String(s) if s.starts_with("#cloud-config") => {
            *s = "<user-data>".into();
            1
        }
        Json::String(s) => match serde_json::from_str::<Json>(s) {
            Ok(mut inner @ Json::Object(_)) => {
                let n = scrub(&mut inner);
                *s = inner.to_string();
                n
            }
            _ => 0,
        },
        Json::Array(a) => a.iter_mut().map(scrub).sum(),
        Json::Object(m) => m.values_mut().map(scrub).sum(),
        _ => 0,
    }
}

/// The whole response with the user-data snippet's content taken out, and
/// the snippets themselves.
fn without_snippet(rsp: &RunFunctionResponse) -> (String, Vec<String>) {
    let mut rsp = rsp.clone();
    let mut snippets = Vec::new();
    if let Some(d) = rsp.desired.as_mut() {
        for r in d.resources.values_mut() {
            if let Some(s) = r.resource.as_ref() {
                let mut j = struct_to_json(s);
                snippets.push(j.to_string());
                scrub(&mut j);
                r.resource = j.as_object().map(json_to_struct);
            }
        }
    }
    (format!("{rsp:?}"), snippets)
}

fn assert_no_leak(rsp: &RunFunctionResponse, secrets: &[String], what: &str) -> bool {
    let (rest, snippets) = without_snippet(rsp);
    for s in secrets {
        assert!(
            !rest.contains(s.as_str()),
            "{what}: a secret outside the snippet:\n{rest}"
        );
    }
    snippets
        .iter()
        .any(|sn| secrets.iter().all(|s| sn.contains(s.as_str())))
}

#[test]
fn the_credential_secret_is_asked_for_in_the_machines_namespace_only() {
    for backend in BACKENDS {
        let xr = ssh_machine();
        let inp = input(backend);
        let rsp = run(&request(&xr, Some(&inp), &[]));
        assert_eq!(fatal(&rsp), None, "{backend}: {}", messages(&rsp));
        assert_requires_secret(
            &rsp,
            credential::REQUIREMENT,
            "team-a",
            "fleet-deploy-key",
            backend,
        );
        assert!(
            names(&rsp).is_empty(),
            "{backend}: composed before the credential is known"
        );
        assert_eq!(xr_status(&rsp)["phase"], "WaitingForKeys");

        // The same name in another namespace is never read.
        let foreign = key_secret("team-b");
        let rsp = run(&with_required(
            request(&xr, Some(&inp), &[]),
            credential::REQUIREMENT,
            std::slice::from_ref(&foreign),
        ));
        assert!(names(&rsp).is_empty(), "{backend}: {:?}", names(&rsp));
        assert!(
            messages(&rsp).contains("team-a/fleet-deploy-key"),
            "{}",
            messages(&rsp)
        );
        assert!(!assert_no_leak(&rsp, &key_lines(), backend));

        // The own Secret: the snippet carries the key as root-only files.
        let rsp = run(&with_required(
            request(&xr, Some(&inp), &[]),
            credential::REQUIREMENT,
            &[foreign, key_secret("team-a")],
        ));
        assert_eq!(fatal(&rsp), None, "{backend}: {}", messages(&rsp));
        assert!(
            assert_no_leak(&rsp, &key_lines(), backend),
            "{backend}: the snippet lacks the key"
        );
        let user_data = user_data_of(&rsp, backend);
        let body: Json =
            serde_json::from_str(user_data.trim_start_matches("#cloud-config\n")).unwrap();
        let files: Vec<&Json> = body["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/etc/fabric/credentials/")
            })
            .collect();
        assert_eq!(files.len(), 2, "{backend}: {files:?}");
        for f in files {
            assert_eq!(
                (f["owner"].as_str(), f["permissions"].as_str()),
                (Some("root:root"), Some("0600"))
            );
        }
    }
}

/// The user-data a response composes, for either backend.
fn user_data_of(rsp: &RunFunctionResponse, backend: &str) -> String {
    fn find(v: &Json) -> Option<String> {
        match v {
            Json::String(s) if s.starts_with("#cloud-config") => Some(s.clone()),
            Json::String(s) => serde_json::from_str::<Json>(s)
                .ok()
                .filter(Json::is_object)
                .and_then(|j| find(&j)),
            Json::Array(a) => a.iter().find_map(find),
            Json::Object(m) => m.values().find_map(find),
            _ => None,
        }
    }
    let name = if backend == "bpg" {
        bpg::SNIPPET
    } else {
        terraform::WORKSPACE
    };
    // Terraform's module escapes template sequences; none occur in these files.
    find(&desired(rsp, name).unwrap()).unwrap()
}

/// A machine with its Secret and the secret values in it, for each kind:
/// the example's deploy key, and `token` for github.com.
fn both_kinds(token: &str) -> [(Json, Json, Vec<String>); 2] {
    [
        (ssh_machine(), key_secret("team-a"), key_lines()),
        (
            token_machine(),
            token_secret("team-a", &format!("github.com={token}")),
            vec![token.to_string()],
        ),
    ]
}

#[test]
fn the_credential_appears_only_in_the_snippet_for_both_kinds_and_backends() {
    for (xr, secret, secrets) in both_kinds("github_pat_11FAKE0token0value0for0the0leak0test") {
        for backend in BACKENDS {
            let mut composed = 0;
            for (i, req) in requests(&xr, backend, &secret).iter().enumerate() {
                for rsp in [run(req), run_uncached(req), run(req)] {
                    assert_eq!(fatal(&rsp), None, "{backend} call {i}: {}", messages(&rsp));
                    composed += usize::from(assert_no_leak(&rsp, &secrets, backend));
                }
            }
            assert!(
                composed >= 6,
                "{backend}: the snippet was composed {composed} times"
            );
        }
    }
}

#[test]
fn a_refused_credential_is_fatal_naming_the_field_and_never_the_secret() {
    let token = "glpat-FAKE0token0for0another0host";
    let mut no_pin = key_secret("team-a");
    no_pin["stringData"]
        .as_object_mut()
        .unwrap()
        .remove("known_hosts");
    let cases = [
        (
            token_machine(),
            token_secret("team-a", &format!("gitlab.com={token}")),
            vec![token.to_string()],
            "data.access-tokens: entry 1 is for gitlab.com",
        ),
        (
            ssh_machine(),
            no_pin,
            key_lines(),
            "data.known_hosts: the Secret holds an SSH key but no known_hosts",
        ),
        // A token for an SSH reference.
        (
            {
                let mut m = ssh_machine();
                m["spec"]["nix"]["credentialsSecretRef"]["name"] = json!("fleet-token");
                m
            },
            token_secret("team-a", &format!("git.example.org={token}")),
            vec![token.to_string()],
            "access tokens are for HTTPS references",
        ),
    ];
    for (xr, secret, secrets, want) in cases {
        for backend in BACKENDS {
            let logs = logs_of(|| {
                let rsp = run(&with_required(
                    request(&xr, Some(&input(backend)), &[]),
                    credential::REQUIREMENT,
                    std::slice::from_ref(&secret),
                ));
                let msg = fatal(&rsp).unwrap_or_else(|| panic!("{backend}: not refused"));
                assert!(
                    msg.contains("spec.nix.credentialsSecretRef: fleet credential Secret team-a/"),
                    "{msg}"
                );
                assert!(msg.contains(want), "{msg}");
                assert!(names(&rsp).is_empty());
                assert!(!assert_no_leak(&rsp, &secrets, backend));
            });
            for s in &secrets {
                assert!(
                    !logs.contains(s.as_str()),
                    "{backend}: logs carry the secret:\n{logs}"
                );
            }
        }
    }
}

#[test]
fn the_logs_never_carry_the_credential() {
    for (xr, secret, secrets) in both_kinds("github_pat_11FAKE0token0value0for0the0log0test") {
        for backend in BACKENDS {
            let logs = logs_of(|| {
                for req in requests(&xr, backend, &secret) {
                    run(&req);
                    run_uncached(&req);
                    // Also through the gRPC service, which logs each call.
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        use function_sdk_rust::proto::v1::function_runner_service_server::FunctionRunnerService;
                        let _ = fabric_function::Function::default()
                            .run_function(tonic::Request::new(req.clone()))
                            .await;
                    });
                }
            });
            assert!(
                logs.contains("fleet credential")
                    || logs.contains("fleet-deploy-key")
                    || logs.contains("fleet-token"),
                "the capture saw nothing:\n{logs}"
            );
            for s in &secrets {
                assert!(
                    !logs.contains(s.as_str()),
                    "{backend}: logs carry the secret:\n{logs}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Whatever the token, it is in the snippet and nowhere else.
    #[test]
    fn any_token_stays_in_the_snippet(token in "[A-Za-z0-9_.:-]{12,80}", terraform in any::<bool>()) {
        let backend = if terraform { "terraform" } else { "bpg" };
        let secret = token_secret("team-a", &format!("github.com={token}"));
        let req = with_required(request(&token_machine(), Some(&input(backend)), &[]), credential::REQUIREMENT, &[secret]);
        let rsp = run_uncached(&req);
        prop_assert_eq!(fatal(&rsp), None);
        prop_assert!(assert_no_leak(&rsp, std::slice::from_ref(&token), backend));
    }
}

#[test]
fn a_legacy_xmachine_reads_its_credential_in_the_claim_namespace() {
    let mut xr = xmachine();
    xr["spec"]["nix"] = ssh_machine()["spec"]["nix"].clone();
    let rsp = run(&request(&xr, Some(&input("bpg")), &[]));
    let sel = rsp
        .requirements
        .as_ref()
        .and_then(|r| r.resources.get(credential::REQUIREMENT))
        .cloned()
        .unwrap();
    assert_eq!(sel.namespace.as_deref(), Some("team-a"));
    let rsp = run(&with_required(
        request(&xr, Some(&input("bpg")), &[]),
        credential::REQUIREMENT,
        &[key_secret("team-a")],
    ));
    assert_eq!(fatal(&rsp), None, "{}", messages(&rsp));
    assert!(assert_no_leak(&rsp, &key_lines(), "xmachine"));
    // Without a claim there is no namespace to read it from: Fatal, named.
    xr["metadata"]["labels"] = json!({});
    let rsp = run(&request(&xr, Some(&input("bpg")), &[]));
    let msg = fatal(&rsp).unwrap();
    assert!(
        msg.starts_with("spec.nix.credentialsSecretRef: a cluster-scoped XMachine"),
        "{msg}"
    );
}

#[test]
fn a_rotated_token_reaches_the_next_snippet_through_the_memo() {
    let xr = token_machine();
    for backend in BACKENDS {
        let mut seen = Vec::new();
        for token in [
            "github_pat_FAKE0first0token000",
            "github_pat_FAKE0second0token00",
        ] {
            let secret = token_secret("team-a", &format!("github.com={token}"));
            let req = with_required(
                request(&xr, Some(&input(backend)), &[]),
                credential::REQUIREMENT,
                &[secret],
            );
            // Twice through the memo: the second answer is the remembered plan.
            for rsp in [run(&req), run(&req)] {
                let ud = user_data_of(&rsp, backend);
                assert!(ud.contains(token), "{backend}: {token} not in the snippet");
                for old in &seen {
                    assert!(!ud.contains(*old), "{backend}: the old token stayed");
                }
            }
            seen.push(token);
        }
    }
}

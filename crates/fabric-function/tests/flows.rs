//! The function as a pure call: what it composes, in which order, and what
//! it refuses. The gRPC tests drive the same `run` over the wire.

use fabric_function::terraform_template::escape;
use fabric_function::{bpg, keys, run, terraform};
use function_sdk_rust::proto::v1::{Ready, Resource, Severity};
use function_sdk_rust::resource::json_to_struct;
use serde_json::{json, Value as Json};

use crate::support::*;

fn rendered_user_data(xr: &Json, secret_keys: Option<&str>) -> String {
    let machine = fabric_model::Machine::from_json(xr).unwrap_or_else(|d| panic!("{d:?}"));
    let keys: Option<Vec<fabric_model::AuthorizedKey>> = secret_keys
        .map(|line| vec![fabric_model::sshkeys::parse(line).unwrap_or_else(|e| panic!("{e:?}"))]);
    fabric_cloudinit::render_user_data(
        &machine,
        keys.as_deref(),
        &fabric_cloudinit::RenderOptions {
            fabric_flake: "github:kubelize/fabric".into(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn bpg_composes_snippet_then_vm_then_becomes_ready() {
    let xr = machine();
    let input = input("bpg");

    // 1. Nothing exists: only the snippet, holding exactly fabric render's
    // user-data, escaped as the provider's Terraform must read it.
    let rsp = run(&request(&xr, Some(&input), &[]));
    let first = rsp.clone();
    assert_eq!(fatal(&rsp), None);
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data"]
    );
    let snippet = desired(&rsp, bpg::SNIPPET).unwrap_or_default();
    assert_eq!(
        snippet["apiVersion"],
        "virtualenvironmentfile.proxmoxbpg.m.crossplane.io/v1alpha1"
    );
    assert_eq!(snippet["spec"]["forProvider"]["contentType"], "snippets");
    assert_eq!(snippet["spec"]["forProvider"]["datastoreId"], "local");
    assert_eq!(snippet["spec"]["forProvider"]["nodeName"], "pve1");
    assert_eq!(
        snippet["spec"]["initProvider"]["sourceRaw"][0]["data"],
        escape(&rendered_user_data(&xr, None))
    );
    let file_name = snippet["spec"]["initProvider"]["sourceRaw"][0]["fileName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        file_name.starts_with("fabric-web01-") && file_name.ends_with(".user-data.yaml"),
        "{file_name}"
    );
    assert!(
        snippet.get("metadata").is_none(),
        "Crossplane names composed resources"
    );
    assert_eq!(desired_ready(&rsp, bpg::SNIPPET), Some(Ready::False as i32));
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForSnippet");
    assert_eq!(xr_ready(&rsp), Some(Ready::False as i32));
    assert_eq!(rsp.results.len(), 1);
    assert_eq!(rsp.results[0].severity, Severity::Normal as i32);
    assert!(
        rsp.results[0]
            .message
            .starts_with("WaitingForSnippet: uploading"),
        "{}",
        rsp.results[0].message
    );

    // 2. The snippet is being uploaded: still no VM, and no new event.
    let xr = with_phase(machine(), "WaitingForSnippet");
    let rsp = run(&request(
        &xr,
        Some(&input),
        &with_snippets(&first, &[(bpg::SNIPPET, observed_creating(&snippet))]),
    ));
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data"]
    );
    assert!(rsp.results.is_empty(), "nothing changed: {:?}", rsp.results);
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForSnippet");

    // 3. The snippet is Ready: the VM reads it by the id the provider reported.
    let file_id = format!("local:snippets/{file_name}");
    let snippet_ready = observed_ready(&snippet, json!({"id": file_id}));
    let rsp = run(&request(
        &xr,
        Some(&input),
        &with_snippets(&first, &[(bpg::SNIPPET, snippet_ready.clone())]),
    ));
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data", "vm"]
    );
    assert_eq!(desired_ready(&rsp, bpg::SNIPPET), Some(Ready::True as i32));
    assert_eq!(desired_ready(&rsp, bpg::VM), Some(Ready::False as i32));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    assert_eq!(
        vm["spec"]["initProvider"]["initialization"][0]["userDataFileId"],
        json!(file_id)
    );
    assert_eq!(xr_status(&rsp)["phase"], "Provisioning");
    assert_eq!(
        xr_ready(&rsp),
        Some(Ready::False as i32),
        "the XR waits for the VM"
    );
    assert_eq!(rsp.results.len(), 1);

    // 4. The VM is Ready: so is the XR, with the VM id and guest addresses.
    let xr = with_phase(machine(), "Provisioning");
    let vm_ready = observed_ready(
        &vm,
        json!({"vmId": 104.0, "ipv4Addresses": [["127.0.0.1"], ["10.0.1.10"]], "ipv6Addresses": [["::1"], ["fe80::be24:11ff:fe5e:1"]]}),
    );
    let rsp = run(&request(
        &xr,
        Some(&input),
        &with_snippets(
            &first,
            &[
                (bpg::SNIPPET, snippet_ready.clone()),
                (bpg::VM, vm_ready.clone()),
            ],
        ),
    ));
    assert_eq!(desired_ready(&rsp, bpg::VM), Some(Ready::True as i32));
    assert_eq!(
        xr_ready(&rsp),
        Some(Ready::Unspecified as i32),
        "Crossplane sees every resource ready"
    );
    let status = xr_status(&rsp);
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["vmId"], json!(104));
    assert_eq!(status["ipAddresses"], json!(["10.0.1.10"]));
    assert_eq!(status["node"], "pve1");
    assert_eq!(status["userDataFileId"], json!(file_id));
    let provisioned = rsp.conditions.iter().find(|c| c.r#type == "Provisioned");
    assert_eq!(
        provisioned.map(|c| c.status),
        Some(function_sdk_rust::proto::v1::Status::ConditionTrue as i32)
    );
    let bootstrapped = rsp.conditions.iter().find(|c| c.r#type == "Bootstrapped");
    assert_eq!(
        bootstrapped.map(|c| c.reason.as_str()),
        Some("NotObservable")
    );

    // 5. Once the VM exists it stays desired, even if the snippet flaps.
    let xr = with_phase(machine(), "Running");
    let rsp = run(&request(
        &xr,
        Some(&input),
        &[
            (bpg::SNIPPET, observed_creating(&snippet)),
            (bpg::VM, vm_ready),
        ],
    ));
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data", "vm"]
    );
    let vm_again = desired(&rsp, bpg::VM).unwrap_or_default();
    assert_eq!(
        vm_again["spec"]["initProvider"]["initialization"][0]["userDataFileId"],
        json!(file_id)
    );
}

#[test]
fn a_ready_snippet_without_an_id_keeps_the_xr_not_ready() {
    let xr = machine();
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let rsp = run(&request(
        &xr,
        Some(&input("bpg")),
        &with_snippets(
            &first,
            &[(bpg::SNIPPET, observed_ready(&snippet, json!({})))],
        ),
    ));
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data"]
    );
    assert_eq!(xr_ready(&rsp), Some(Ready::False as i32));
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForSnippet");
}

#[test]
fn the_vm_carries_size_network_placement_and_create_time_fields_in_init_provider() {
    let xr = machine();
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let rsp = run(&request(
        &xr,
        Some(&input("bpg")),
        &with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
            )],
        ),
    ));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    assert_eq!(
        vm["apiVersion"],
        "virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1alpha1"
    );
    assert_eq!(vm["kind"], "EnvironmentVM");
    let fp = &vm["spec"]["forProvider"];
    let ip = &vm["spec"]["initProvider"];
    assert_eq!(
        vm["spec"]["providerConfigRef"],
        json!({"kind": "ClusterProviderConfig", "name": "default"})
    );
    assert_eq!(fp["name"], "web01");
    assert_eq!(fp["nodeName"], "pve1");
    assert_eq!(fp["cpu"], json!([{"cores": 2, "sockets": 1}]));
    assert_eq!(fp["memory"], json!([{"dedicated": 4096}]));
    assert_eq!(fp["disk"][0]["size"], json!(40));
    assert_eq!(fp["disk"][0]["datastoreId"], "local-zfs");
    assert_eq!(fp["networkDevice"][0]["bridge"], "vmbr0");
    assert_eq!(fp["networkDevice"][0]["vlanId"], json!(20));
    assert_eq!(fp["networkDevice"][0]["macAddress"], "BC:24:11:5E:00:01");
    assert_eq!(fp["agent"], json!([{"enabled": true}]));
    assert_eq!(fp["onBoot"], true);
    assert_eq!(fp["started"], true);
    assert_eq!(fp["tags"], json!(["env.prod", "fabric"]));
    assert!(fp.get("clone").is_none() && fp.get("initialization").is_none());
    assert_eq!(ip["clone"][0]["vmId"], json!(9000));
    let init = &ip["initialization"][0];
    // Fabric's own meta-data and network-config, not Proxmox's: the
    // network-config carries addresses, routes and DNS, so neither ipConfig
    // nor dns is set (bpg documents them as conflicting).
    let machine = fabric_model::Machine::from_json(&xr).unwrap_or_else(|d| panic!("{d:?}"));
    for (name, field, content) in [
        (
            bpg::META_DATA,
            "metaDataFileId",
            fabric_cloudinit::render_meta_data(&machine).ok(),
        ),
        (
            bpg::NETWORK_CONFIG,
            "networkDataFileId",
            fabric_cloudinit::render_network_config(&machine)
                .ok()
                .flatten(),
        ),
    ] {
        let file = desired(&first, name).unwrap_or_default();
        let source = &file["spec"]["initProvider"]["sourceRaw"][0];
        assert_eq!(source["data"].as_str(), content.as_deref(), "{name}");
        assert_eq!(
            init[field],
            json!(format!(
                "local:snippets/{}",
                source["fileName"].as_str().unwrap_or_default()
            )),
            "{field}"
        );
    }
    assert!(
        init.get("ipConfig").is_none() && init.get("dns").is_none(),
        "{init}"
    );
    assert!(init.get("userAccount").is_none());
}

#[test]
fn a_dhcp_machine_asks_proxmox_for_dhcp() {
    let mut xr = machine();
    xr["spec"]["network"] = json!({"dhcp": true});
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let rsp = run(&request(
        &xr,
        Some(&input("bpg")),
        &with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
            )],
        ),
    ));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    // No network-config of Fabric's: Proxmox's asks for DHCP on net0.
    assert_eq!(names(&first), vec!["meta-data", "user-data"]);
    let init = &vm["spec"]["initProvider"]["initialization"][0];
    assert_eq!(init["ipConfig"], json!([{"ipv4": [{"address": "dhcp"}]}]));
    assert!(init.get("networkDataFileId").is_none(), "{init}");
    assert!(init["metaDataFileId"].is_string(), "{init}");
}

#[test]
fn the_machine_spec_wins_over_input_defaults_and_input_defaults_fill_the_rest() {
    let mut xr = machine();
    xr["spec"]["proxmox"] = json!({"node": "pve2", "bridge": "vmbr1"});
    let mut inp = input("bpg");
    inp["proxmox"]["storage"] = json!("ceph");
    inp["proxmox"]["bridge"] = json!("vmbr9");
    let first = run(&request(&xr, Some(&inp), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    assert_eq!(snippet["spec"]["forProvider"]["nodeName"], "pve2");
    let rsp = run(&request(
        &xr,
        Some(&inp),
        &with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
            )],
        ),
    ));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    assert_eq!(
        vm["spec"]["forProvider"]["networkDevice"][0]["bridge"],
        "vmbr1"
    );
    assert_eq!(vm["spec"]["forProvider"]["disk"][0]["datastoreId"], "ceph");
}

#[test]
fn terraform_composes_one_inline_json_workspace_with_the_same_content() {
    let xr = machine();
    let rsp = run(&request(&xr, Some(&input("terraform")), &[]));
    assert_eq!(fatal(&rsp), None);
    assert_eq!(names(&rsp), vec!["workspace"]);
    let ws = desired(&rsp, terraform::WORKSPACE).unwrap_or_default();
    assert_eq!(ws["apiVersion"], "tf.m.upbound.io/v1beta1");
    assert_eq!(ws["kind"], "Workspace");
    let fp = &ws["spec"]["forProvider"];
    assert_eq!(fp["source"], "Inline");
    assert_eq!(fp["inlineFormat"], "JSON");
    assert_eq!(fp["varmap"]["node_name"], "pve1");
    assert_eq!(fp["varmap"]["template_vm_id"], json!(9000));
    let module: Json =
        serde_json::from_str(fp["module"].as_str().unwrap_or_default()).unwrap_or_default();
    let file = &module["resource"]["proxmox_virtual_environment_file"]["user_data"];
    let data = file["source_raw"]["data"].as_str().unwrap_or_default();
    assert_eq!(
        data,
        escape(&rendered_user_data(&xr, None)),
        "the same user-data as bpg, template sequences escaped"
    );
    assert_eq!(file["content_type"], "snippets");
    let vm = &module["resource"]["proxmox_virtual_environment_vm"]["machine"];
    assert_eq!(
        vm["initialization"]["user_data_file_id"],
        "${proxmox_virtual_environment_file.user_data.id}"
    );
    for (resource, field) in [
        ("meta_data", "meta_data_file_id"),
        ("network_config", "network_data_file_id"),
    ] {
        assert_eq!(
            vm["initialization"][field],
            json!(format!(
                "${{proxmox_virtual_environment_file.{resource}.id}}"
            ))
        );
        assert_eq!(
            module["resource"]["proxmox_virtual_environment_file"][resource]["content_type"],
            "snippets"
        );
    }
    assert!(vm["initialization"].get("ip_config").is_none());
    assert_eq!(vm["network_device"][0]["vlan_id"], json!(20));
    assert_eq!(
        vm["lifecycle"]["ignore_changes"],
        json!(["clone", "initialization"])
    );
    for var in module["variable"]
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        assert!(
            fp["varmap"].get(&var).is_some(),
            "variable {var} has a value"
        );
    }
    assert_eq!(xr_status(&rsp)["phase"], "Provisioning");
    assert_eq!(xr_ready(&rsp), Some(Ready::False as i32));

    let xr = with_phase(machine(), "Provisioning");
    let ready = observed_ready(
        &ws,
        json!({"outputs": {"vm_id": 131, "ipv4_addresses": [["127.0.0.1"], ["10.0.1.10"]], "ipv6_addresses": [], "user_data_file_id": "local:snippets/f.yaml"}}),
    );
    let rsp = run(&request(
        &xr,
        Some(&input("terraform")),
        &[(terraform::WORKSPACE, ready)],
    ));
    assert_eq!(
        desired_ready(&rsp, terraform::WORKSPACE),
        Some(Ready::True as i32)
    );
    let status = xr_status(&rsp);
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["vmId"], json!(131));
    assert_eq!(status["ipAddresses"], json!(["10.0.1.10"]));
    assert_eq!(status["userDataFileId"], "local:snippets/f.yaml");
}

#[test]
fn switching_backend_drops_the_other_backends_resources() {
    let xr = machine();
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    let mut req = request(&xr, Some(&input("terraform")), &[]);
    req.desired = first.desired.clone();
    let rsp = run(&req);
    assert_eq!(names(&rsp), vec!["workspace"]);
}

#[test]
fn a_legacy_xmachine_composes_cluster_scoped_kinds() {
    let xr = xmachine();
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    assert_eq!(fatal(&first), None);
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    assert_eq!(
        snippet["apiVersion"],
        "virtualenvironmentfile.proxmoxbpg.crossplane.io/v1alpha1"
    );
    assert_eq!(
        snippet["spec"]["providerConfigRef"],
        json!({"name": "default"})
    );
    let rsp = run(&request(
        &xr,
        Some(&input("bpg")),
        &with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
            )],
        ),
    ));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    assert_eq!(
        vm["apiVersion"],
        "virtualenvironmentvm.proxmoxbpg.crossplane.io/v1alpha1"
    );
    let ws = desired(
        &run(&request(&xr, Some(&input("terraform")), &[])),
        terraform::WORKSPACE,
    )
    .unwrap_or_default();
    assert_eq!(ws["apiVersion"], "tf.upbound.io/v1beta1");
    assert_eq!(ws["spec"]["providerConfigRef"], json!({"name": "default"}));
}

#[test]
fn the_secret_flow_asks_reads_only_the_own_namespace_and_composes_after() {
    let xr = machine_with_secret();
    let inp = input("bpg");

    // First call: the Secret is asked for, by name, in the XR's namespace.
    let rsp = run(&request(&xr, Some(&inp), &[]));
    assert_eq!(fatal(&rsp), None);
    assert_requires_secret(&rsp, keys::REQUIREMENT, "team-a", "admin-keys", "bpg");
    assert!(
        names(&rsp).is_empty(),
        "no VM (nor snippet) before the keys are known"
    );
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForKeys");

    // A Secret of the same name from another namespace is ignored.
    let foreign = secret("team-b", "admin-keys", &secret_key_line());
    let rsp = run(&with_required(
        request(&xr, Some(&inp), &[]),
        keys::REQUIREMENT,
        std::slice::from_ref(&foreign),
    ));
    assert!(names(&rsp).is_empty());
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForKeys");
    assert!(
        messages(&rsp).contains("team-a/admin-keys"),
        "{}",
        messages(&rsp)
    );
    assert_eq!(
        rsp.results.first().map(|r| r.severity),
        Some(Severity::Warning as i32)
    );

    // The own Secret: keys known, snippet composed with them, requirement kept.
    let own = secret(
        "team-a",
        "admin-keys",
        &format!("# team keys\n{}\n", secret_key_line()),
    );
    let rsp = run(&with_required(
        request(&xr, Some(&inp), &[]),
        keys::REQUIREMENT,
        &[foreign, own],
    ));
    assert_eq!(fatal(&rsp), None);
    assert_eq!(
        names(&rsp),
        vec!["meta-data", "network-config", "user-data"]
    );
    let data = desired(&rsp, bpg::SNIPPET).unwrap_or_default()["spec"]["initProvider"]["sourceRaw"]
        [0]["data"]
        .clone();
    assert_eq!(
        data,
        json!(escape(&rendered_user_data(&xr, Some(&secret_key_line()))))
    );
    assert!(data.as_str().unwrap_or_default().contains(SECRET_KEY_BODY));
    assert!(rsp
        .requirements
        .as_ref()
        .is_some_and(|r| r.resources.contains_key(keys::REQUIREMENT)));
    assert!(!messages(&rsp).contains(SECRET_KEY_BODY));
}

#[test]
fn secret_problems_name_the_secret_and_never_its_content() {
    let xr = machine_with_secret();
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
    for content in [
        private.to_string(),
        format!("{}\nssh-ed25519 AAAAnotakey x", secret_key_line()),
    ] {
        let s = secret("team-a", "admin-keys", &content);
        let rsp = run(&with_required(
            request(&xr, Some(&input("bpg")), &[]),
            keys::REQUIREMENT,
            &[s],
        ));
        let msg = fatal(&rsp).unwrap_or_default();
        assert!(
            msg.contains(
                "Secret team-a/admin-keys (key authorized_keys): data.authorized_keys: line"
            ),
            "{msg}"
        );
        assert!(names(&rsp).is_empty());
        let all = messages(&rsp);
        for secret_text in [
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
            SECRET_KEY_BODY,
            "AAAAnotakey",
        ] {
            assert!(!all.contains(secret_text), "{all}");
        }
    }
}

#[test]
fn a_missing_secret_after_creation_changes_nothing() {
    let xr = with_phase(machine_with_secret(), "Running");
    let observed_vm = observed_ready(
        &json!({"apiVersion": "x", "kind": "EnvironmentVM", "spec": {}}),
        json!({}),
    );
    let mut req = with_required(
        request(&xr, Some(&input("bpg")), &[(bpg::VM, observed_vm)]),
        keys::REQUIREMENT,
        &[],
    );
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    req.desired.get_or_insert_default().resources.insert(
        "from-an-earlier-step".into(),
        Resource {
            resource: other.as_object().map(json_to_struct),
            ..Default::default()
        },
    );
    let rsp = run(&req);
    let msg = fatal(&rsp).unwrap_or_default();
    assert!(
        msg.starts_with(
            "spec.bootstrap.sshAuthorizedKeysSecretRef: the SSH keys Secret team-a/admin-keys"
        ),
        "{msg}"
    );
    assert!(msg.contains("nothing changes"), "{msg}");
    assert_eq!(
        names(&rsp),
        vec!["from-an-earlier-step"],
        "passed through, nothing of Fabric's dropped or added"
    );
}

/// Found by `crossplane composition render`: Crossplane's first call of a
/// reconcile has no required resources, and a Fatal result in any call
/// ends the pipeline before Crossplane fetches the Secret. So the first call
/// for a machine whose resources exist must only ask, and the second one,
/// with the Secret, compose.
#[test]
fn the_first_call_of_a_reconcile_asks_for_the_secret_without_a_fatal_result() {
    let xr = with_phase(machine_with_secret(), "Running");
    let observed_vm = observed_ready(
        &json!({"apiVersion": "x", "kind": "EnvironmentVM", "spec": {}}),
        json!({}),
    );
    let first = request(&xr, Some(&input("bpg")), &[(bpg::VM, observed_vm)]);
    let rsp = run(&first);
    assert_eq!(fatal(&rsp), None, "{}", messages(&rsp));
    assert!(
        rsp.requirements
            .as_ref()
            .is_some_and(|r| r.resources.contains_key(keys::REQUIREMENT)),
        "asks for the Secret: {:?}",
        rsp.requirements
    );
    let second = with_required(
        first,
        keys::REQUIREMENT,
        &[secret("team-a", "admin-keys", &secret_key_line())],
    );
    let rsp = run(&second);
    assert_eq!(fatal(&rsp), None, "{}", messages(&rsp));
    assert!(
        names(&rsp).contains(&bpg::VM.to_string()),
        "{:?}",
        names(&rsp)
    );
}

#[test]
fn a_legacy_xmachine_reads_its_secret_in_the_claim_namespace() {
    let mut xr = xmachine();
    xr["spec"]["bootstrap"] = json!({"sshAuthorizedKeysSecretRef": {"name": "admin-keys"}});
    let rsp = run(&request(&xr, Some(&input("bpg")), &[]));
    let sel = rsp
        .requirements
        .as_ref()
        .and_then(|r| r.resources.get(keys::REQUIREMENT))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sel.namespace.as_deref(), Some("team-a"));

    xr["metadata"]["labels"] = json!({});
    let rsp = run(&request(&xr, Some(&input("bpg")), &[]));
    let msg = fatal(&rsp).unwrap_or_default();
    assert!(
        msg.starts_with("spec.bootstrap.sshAuthorizedKeysSecretRef: a cluster-scoped XMachine"),
        "{msg}"
    );
    assert!(
        rsp.requirements.is_none(),
        "no Secret is asked for without a namespace"
    );
}

#[test]
fn an_invalid_spec_is_fatal_naming_the_field_path_and_composes_nothing() {
    let mut xr = machine();
    xr["spec"]["cpu"]["cores"] = json!(0);
    xr["spec"]["network"]["gateway"] = json!("10.9.9.1");
    let rsp = run(&request(&xr, Some(&input("bpg")), &[]));
    let msg = fatal(&rsp).unwrap_or_default();
    assert!(msg.contains("spec.cpu.cores: 0 is out of range"), "{msg}");
    assert!(names(&rsp).is_empty());
    assert_eq!(rsp.results.len(), 1);
}

#[test]
fn unknown_image_missing_node_and_bad_input_are_fatal_and_clear() {
    let mut xr = machine();
    xr["spec"]["image"] = json!("nixos-templat");
    let msg = fatal(&run(&request(&xr, Some(&input("bpg")), &[]))).unwrap_or_default();
    assert_eq!(
        msg,
        "spec.image: nixos-templat is not a template the function knows (did you mean nixos-template? known images: nixos-template)"
    );

    let mut inp = input("bpg");
    inp["proxmox"] = json!({});
    let msg = fatal(&run(&request(&machine(), Some(&inp), &[]))).unwrap_or_default();
    assert!(
        msg.starts_with("spec.proxmox.node: no Proxmox node"),
        "{msg}"
    );

    let mut inp = input("bpg");
    inp["backend"] = json!("pulumi");
    let msg = fatal(&run(&request(&machine(), Some(&inp), &[]))).unwrap_or_default();
    assert!(
        msg.starts_with("input.backend: pulumi is not a known value"),
        "{msg}"
    );

    let msg = fatal(&run(&request(&machine(), None, &[]))).unwrap_or_default();
    assert!(
        msg.contains("spec.image") && msg.contains("lists no templates"),
        "{msg}"
    );

    let mut req = request(&machine(), Some(&input("bpg")), &[]);
    req.observed = None;
    let msg = fatal(&run(&req)).unwrap_or_default();
    assert!(
        msg.starts_with("observed.composite: the request carries no composite resource"),
        "{msg}"
    );
}

#[test]
fn other_steps_desired_resources_pass_through() {
    let mut req = request(&machine(), Some(&input("bpg")), &[]);
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
    req.desired.get_or_insert_default().resources.insert(
        "dashboard".into(),
        Resource {
            resource: other.as_object().map(json_to_struct),
            ..Default::default()
        },
    );
    let rsp = run(&req);
    assert_eq!(
        names(&rsp),
        vec!["dashboard", "meta-data", "network-config", "user-data"]
    );
    assert_eq!(desired(&rsp, "dashboard"), Some(other));
}

#[test]
fn no_key_material_reaches_the_logs() {
    use fabric_function::Function;
    use function_sdk_rust::proto::v1::function_runner_service_server::FunctionRunnerService;

    let xr = machine_with_secret();
    let good = secret("team-a", "admin-keys", &secret_key_line());
    let bad = secret(
        "team-a",
        "admin-keys",
        &format!("{}\nssh-ed25519 AAAAnotakey x", secret_key_line()),
    );
    let foreign = secret("team-b", "admin-keys", &secret_key_line());
    let requests = vec![
        with_required(
            request(&xr, Some(&input("bpg")), &[]),
            keys::REQUIREMENT,
            &[foreign.clone(), good],
        ),
        with_required(
            request(&xr, Some(&input("terraform")), &[]),
            keys::REQUIREMENT,
            &[bad],
        ),
        with_required(
            request(&xr, Some(&input("bpg")), &[]),
            keys::REQUIREMENT,
            &[foreign],
        ),
    ];
    let mut composed = 0;
    let logs = logs_of(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let Ok(rt) = rt else { return };
        for req in requests {
            let rsp = rt.block_on(Function::default().run_function(tonic::Request::new(req)));
            if let Ok(rsp) = rsp {
                composed += names(rsp.get_ref()).len();
                assert!(!messages(rsp.get_ref()).contains(SECRET_KEY_BODY));
            }
        }
    });
    assert_eq!(composed, 3, "the good Secret composed the snippets");
    assert!(
        logs.contains("composed") && logs.contains("ignored required resources"),
        "{logs}"
    );
    for secret_text in [SECRET_KEY_BODY, "AAAAnotakey", "bob@desk"] {
        assert!(!logs.contains(secret_text), "{secret_text} logged: {logs}");
    }
}

#[test]
fn the_memo_answers_exactly_as_a_fresh_run_and_sees_every_change() {
    use fabric_function::run_uncached;
    let xr = machine_with_secret();
    let own = |line: &str| secret("team-a", "admin-keys", line);
    let snippets_ready = {
        let first = run_uncached(&with_required(
            request(&xr, Some(&input("bpg")), &[]),
            keys::REQUIREMENT,
            &[own(&secret_key_line())],
        ));
        with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(
                    &desired(&first, bpg::SNIPPET).unwrap_or_default(),
                    json!({"id": "local:snippets/x.yaml"}),
                ),
            )],
        )
    };
    let requests = [
        with_required(
            request(&xr, Some(&input("bpg")), &[]),
            keys::REQUIREMENT,
            &[own(&secret_key_line())],
        ),
        with_required(
            request(&xr, Some(&input("bpg")), &snippets_ready),
            keys::REQUIREMENT,
            &[own(&secret_key_line())],
        ),
        with_required(
            request(&xr, Some(&input("terraform")), &[]),
            keys::REQUIREMENT,
            &[own(&secret_key_line())],
        ),
        request(&machine(), Some(&input("bpg")), &[]),
        request(&xmachine(), Some(&input("terraform")), &[]),
    ];
    for req in &requests {
        let fresh = run_uncached(req);
        assert_eq!(run(req), fresh, "first call");
        assert_eq!(run(req), fresh, "remembered call");
    }

    // A changed spec, input or Secret is a different plan at once.
    let mut bigger = machine();
    bigger["spec"]["cpu"]["cores"] = json!(6);
    let first = run(&request(&machine(), Some(&input("bpg")), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let obs = with_snippets(
        &first,
        &[(
            bpg::SNIPPET,
            observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
        )],
    );
    let vm = |rsp: &function_sdk_rust::proto::v1::RunFunctionResponse| {
        desired(rsp, bpg::VM).unwrap_or_default()
    };
    assert_eq!(
        vm(&run(&request(&machine(), Some(&input("bpg")), &obs)))["spec"]["forProvider"]["cpu"][0]
            ["cores"],
        json!(2)
    );
    assert_eq!(
        vm(&run(&request(&bigger, Some(&input("bpg")), &obs)))["spec"]["forProvider"]["cpu"][0]
            ["cores"],
        json!(6)
    );
    let mut other_template = input("bpg");
    other_template["templates"]["nixos-template"] = json!({"vmId": 9100});
    assert_eq!(
        vm(&run(&request(&machine(), Some(&other_template), &obs)))["spec"]["initProvider"]
            ["clone"][0]["vmId"],
        json!(9100)
    );
    let data = |rsp: &function_sdk_rust::proto::v1::RunFunctionResponse| {
        desired(rsp, bpg::SNIPPET).unwrap_or_default()["spec"]["initProvider"]["sourceRaw"][0]
            ["data"]
            .clone()
    };
    let with_key = run(&with_required(
        request(&xr, Some(&input("bpg")), &[]),
        keys::REQUIREMENT,
        &[own(&secret_key_line())],
    ));
    let with_other = run(&with_required(
        request(&xr, Some(&input("bpg")), &[]),
        keys::REQUIREMENT,
        &[own(KEY_A)],
    ));
    assert!(data(&with_key)
        .as_str()
        .is_some_and(|d| d.contains(SECRET_KEY_BODY)));
    assert!(data(&with_other)
        .as_str()
        .is_some_and(|d| !d.contains(SECRET_KEY_BODY) && d.contains("alice@laptop")));
}

#[test]
fn no_composed_object_has_a_name_and_each_names_the_input_provider_config() {
    let mut inp = input("terraform");
    inp["providerConfigRef"] = json!({"kind": "ProviderConfig", "name": "lab"});
    let ws = desired(
        &run(&request(&machine(), Some(&inp), &[])),
        terraform::WORKSPACE,
    )
    .unwrap_or_default();
    assert!(ws.get("metadata").is_none());
    assert_eq!(
        ws["spec"]["providerConfigRef"],
        json!({"kind": "ProviderConfig", "name": "lab"})
    );
    inp["backend"] = json!("bpg");
    let first = run(&request(&machine(), Some(&inp), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let rsp = run(&request(
        &machine(),
        Some(&inp),
        &with_snippets(
            &first,
            &[(
                bpg::SNIPPET,
                observed_ready(&snippet, json!({"id": "local:snippets/x.yaml"})),
            )],
        ),
    ));
    for name in [bpg::SNIPPET, bpg::VM] {
        let o = desired(&rsp, name).unwrap_or_default();
        assert!(o.get("metadata").is_none(), "{name}");
        assert_eq!(
            o["spec"]["providerConfigRef"],
            json!({"kind": "ProviderConfig", "name": "lab"}),
            "{name}"
        );
    }
}

#[test]
fn a_response_near_the_grpc_limit_is_refused_not_sent() {
    let mut req = request(&machine(), Some(&input("bpg")), &[]);
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"blob": "x".repeat(3 * 1024 * 1024)}});
    req.desired.get_or_insert_default().resources.insert(
        "huge".into(),
        Resource {
            resource: big.as_object().map(json_to_struct),
            ..Default::default()
        },
    );
    let rsp = run(&req);
    let msg = fatal(&rsp).unwrap_or_default();
    assert!(
        msg.contains("more than the 3145728 a response may carry"),
        "{msg}"
    );
    assert!(!names(&rsp).contains(&"user-data".to_string()));
}

/// A Running machine's request as Crossplane repeats it: snippet and VM
/// observed Ready, the VM with the provider's status, the XR Running; with
/// `secret`, the machine's keys come from its Secret.
fn running_request(secret_keys: bool) -> function_sdk_rust::proto::v1::RunFunctionRequest {
    use fabric_function::run_uncached;
    let xr = if secret_keys {
        machine_with_secret()
    } else {
        machine()
    };
    let with_keys = |req| {
        if !secret_keys {
            return req;
        }
        with_required(
            req,
            keys::REQUIREMENT,
            &[secret("team-a", "admin-keys", &secret_key_line())],
        )
    };
    let first = run_uncached(&with_keys(request(&xr, Some(&input("bpg")), &[])));
    let snippet = observed_ready(
        &desired(&first, bpg::SNIPPET).unwrap_or_default(),
        json!({"id": "local:snippets/x.yaml"}),
    );
    let snippets = with_snippets(&first, &[(bpg::SNIPPET, snippet)]);
    let second = run_uncached(&with_keys(request(&xr, Some(&input("bpg")), &snippets)));
    assert!(
        desired(&second, bpg::VM).is_some(),
        "every snippet is Ready"
    );
    let vm = observed_ready(
        &desired(&second, bpg::VM).unwrap_or_default(),
        json!({"vmId": 104, "ipv4Addresses": [["127.0.0.1"], ["10.0.1.10"]]}),
    );
    let mut running = xr;
    running["status"] =
        json!({"phase": "Running", "vmId": 104, "node": "pve1", "ipAddresses": ["10.0.1.10"]});
    let mut observed = snippets;
    observed.push((bpg::VM, vm));
    with_keys(request(&running, Some(&input("bpg")), &observed))
}

#[test]
fn a_remembered_answer_is_exactly_a_fresh_run_and_every_change_is_seen_at_once() {
    use fabric_function::memo::Memo;
    use fabric_function::run_uncached;
    use function_sdk_rust::proto::v1::{RequestMeta, State};

    let base = running_request(false);
    let base_fresh = run_uncached(&base);
    assert_eq!(fatal(&base_fresh), None);
    assert_eq!(xr_status(&base_fresh)["phase"], json!("Running"));

    let set = |req: &mut function_sdk_rust::proto::v1::RunFunctionRequest,
               name: &str,
               f: &dyn Fn(&mut Json)| {
        let observed = req.observed.get_or_insert_default();
        let slot = if name == "xr" {
            observed.composite.get_or_insert_default()
        } else {
            observed.resources.entry(name.to_string()).or_default()
        };
        let mut o = slot
            .resource
            .as_ref()
            .map(function_sdk_rust::resource::struct_to_json)
            .unwrap_or_default();
        f(&mut o);
        slot.resource = o.as_object().map(json_to_struct);
    };
    type Change = (
        &'static str,
        Box<dyn Fn(&mut function_sdk_rust::proto::v1::RunFunctionRequest)>,
    );
    let changes: Vec<Change> = vec![
        (
            "spec",
            Box::new(move |r| set(r, "xr", &|o| o["spec"]["cpu"]["cores"] = json!(6))),
        ),
        (
            "XR status",
            Box::new(move |r| set(r, "xr", &|o| o["status"]["phase"] = json!("Provisioning"))),
        ),
        (
            "XR name",
            Box::new(move |r| set(r, "xr", &|o| o["metadata"]["name"] = json!("web02"))),
        ),
        (
            "XR uid",
            Box::new(move |r| set(r, "xr", &|o| o["metadata"]["uid"] = json!("other"))),
        ),
        (
            "XR label",
            Box::new(move |r| {
                set(r, "xr", &|o| {
                    o["metadata"]["labels"] = json!({"crossplane.io/claim-namespace": "team-b"})
                })
            }),
        ),
        (
            "XR resourceVersion",
            Box::new(move |r| set(r, "xr", &|o| o["metadata"]["resourceVersion"] = json!("42"))),
        ),
        (
            "VM not Ready",
            Box::new(move |r| {
                set(r, bpg::VM, &|o| {
                    o["status"]["conditions"][0]["status"] = json!("False")
                })
            }),
        ),
        (
            "VM address",
            Box::new(move |r| {
                set(r, bpg::VM, &|o| {
                    o["status"]["atProvider"]["ipv4Addresses"] = json!([["10.0.1.11"]])
                })
            }),
        ),
        (
            "VM id",
            Box::new(move |r| {
                set(r, bpg::VM, &|o| {
                    o["status"]["atProvider"]["vmId"] = json!(105)
                })
            }),
        ),
        (
            "snippet id",
            Box::new(move |r| {
                set(r, bpg::SNIPPET, &|o| {
                    o["status"]["atProvider"]["id"] = json!("local:snippets/y.yaml")
                })
            }),
        ),
        (
            "VM gone",
            Box::new(|r| {
                r.observed.get_or_insert_default().resources.remove(bpg::VM);
            }),
        ),
        (
            "input",
            Box::new(|r| {
                let mut i = input("bpg");
                i["templates"]["nixos-template"] = json!({"vmId": 9100});
                r.input = i.as_object().map(json_to_struct);
            }),
        ),
        (
            "backend",
            Box::new(|r| r.input = input("terraform").as_object().map(json_to_struct)),
        ),
        (
            "earlier step's desired resource",
            Box::new(|r| {
                r.desired.get_or_insert_default().resources.insert(
                    "dns".into(),
                    resource(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}})),
                );
            }),
        ),
        (
            "earlier step's desired XR status",
            Box::new(|r| {
                r.desired.get_or_insert_default().composite =
                    Some(resource(&json!({"status": {"dns": "ready"}})));
            }),
        ),
        (
            "context",
            Box::new(|r| {
                r.context = json!({"apiextensions.crossplane.io/environment": {"zone": "a"}})
                    .as_object()
                    .map(json_to_struct);
            }),
        ),
        (
            "meta tag",
            Box::new(|r| {
                r.meta = Some(RequestMeta {
                    tag: "other".into(),
                    capabilities: vec![],
                });
            }),
        ),
        (
            "required resources",
            Box::new(|r| {
                let secret = secret("team-a", "admin-keys", KEY_A);
                *r = with_required(r.clone(), keys::REQUIREMENT, &[secret]);
            }),
        ),
        (
            "credentials",
            Box::new(|r| {
                use function_sdk_rust::proto::v1::{
                    credentials::Source, CredentialData, Credentials,
                };
                r.credentials.insert(
                    "db".into(),
                    Credentials {
                        source: Some(Source::CredentialData(CredentialData {
                            data: [("password".to_string(), b"hunter2".to_vec())].into(),
                        })),
                    },
                );
            }),
        ),
        (
            "connection details",
            Box::new(|r| {
                if let Some(vm) = r
                    .observed
                    .get_or_insert_default()
                    .resources
                    .get_mut(bpg::VM)
                {
                    vm.connection_details
                        .insert("password".into(), b"hunter2".to_vec());
                }
            }),
        ),
        (
            "observed XR missing",
            Box::new(|r| {
                r.observed = Some(State::default());
            }),
        ),
    ];

    // The process-wide memo (through run) and a memo of the test's own.
    let memo = Memo::default();
    let answer = |req: &function_sdk_rust::proto::v1::RunFunctionRequest| {
        memo.answer(req).unwrap_or_else(|| {
            let rsp = run_uncached(req);
            memo.remember_answer(req, &rsp);
            rsp
        })
    };
    for (what, change) in &changes {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(changed, base, "{what}: the change changes the request");
        let fresh = run_uncached(&changed);
        // These leave a Running machine's answer as it was (a namespaced
        // Machine has no claim; the VM's status wins over the snippet's);
        // the answer must still be a fresh run's.
        let same_answer = [
            "XR label",
            "XR resourceVersion",
            "snippet id",
            "required resources",
            "credentials",
            "connection details",
        ];
        // These carry Secret content: never remembered whole.
        let never_remembered = ["required resources", "credentials", "connection details"];
        if !same_answer.contains(what) {
            assert_ne!(fresh, base_fresh, "{what}: a fresh run answers differently");
        }
        for round in 0..2 {
            assert_eq!(run(&base), base_fresh, "{what}: before");
            assert_eq!(run(&changed), fresh, "{what}: seen at once");
            assert_eq!(run(&base), base_fresh, "{what}: and back");
            assert_eq!(answer(&base), base_fresh, "{what}: own memo, before");
            if round == 0 {
                // Another XR has a slot of its own, and keeps its answer.
                assert_eq!(memo.answer(&changed), None, "{what}: own memo, a miss");
            }
            assert_eq!(answer(&changed), fresh, "{what}: own memo, seen at once");
            if never_remembered.contains(what) {
                assert_eq!(memo.answer(&changed), None, "{what}: not remembered");
            } else {
                assert_eq!(
                    memo.answer(&changed),
                    Some(fresh.clone()),
                    "{what}: own memo, a hit"
                );
            }
        }
    }
}

#[test]
fn remembered_answers_stay_within_their_budget() {
    use fabric_function::memo::{Memo, ANSWER_BUDGET_BYTES, CAPACITY};
    use fabric_function::run_uncached;

    let memo = Memo::default();
    let base = running_request(false);
    let rsp = run_uncached(&base);
    let mut last = base.clone();
    for i in 0..CAPACITY + 50 {
        let mut xr = machine();
        xr["metadata"]["uid"] = json!(format!("uid-{i}"));
        let mut req = base.clone();
        req.observed.get_or_insert_default().composite = Some(resource(&xr));
        memo.remember_answer(&req, &rsp);
        let (count, bytes) = memo.answers();
        assert!(count <= CAPACITY, "{count} answers");
        assert!(bytes <= ANSWER_BUDGET_BYTES, "{bytes} bytes");
        last = req;
    }
    assert!(memo.answers().0 > 1);
    assert_eq!(memo.answer(&last), Some(rsp.clone()), "the newest is kept");

    // An answer too big to keep is not kept, and forgets the XR's older one.
    let mut huge = last.clone();
    huge.desired.get_or_insert_default().resources.insert(
        "huge".into(),
        resource(&json!({"data": {"blob": "x".repeat(ANSWER_BUDGET_BYTES)}})),
    );
    memo.remember_answer(&huge, &rsp);
    assert_eq!(memo.answer(&huge), None);
    assert_eq!(memo.answer(&last), None);
    assert!(memo.answers().1 <= ANSWER_BUDGET_BYTES);
}

#[test]
fn the_grpc_service_remembers_answers_as_run_does() {
    use fabric_function::{run_uncached, Function};
    use function_sdk_rust::proto::v1::function_runner_service_server::FunctionRunnerService;

    let rt = tokio::runtime::Builder::new_current_thread().build();
    let Ok(rt) = rt else { panic!("no runtime") };
    let call = |req: &function_sdk_rust::proto::v1::RunFunctionRequest| {
        rt.block_on(Function::default().run_function(tonic::Request::new(req.clone())))
            .map(tonic::Response::into_inner)
            .map_err(|e| e.to_string())
    };
    let base = running_request(false);
    let mut moved = base.clone();
    let mut vm = desired(&run_uncached(&base), bpg::VM).unwrap_or_default();
    vm["status"] =
        json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Unavailable"}]});
    moved
        .observed
        .get_or_insert_default()
        .resources
        .insert(bpg::VM.into(), resource(&vm));
    for req in [&base, &moved, &base, &moved] {
        let fresh = run_uncached(req);
        assert_eq!(call(req), Ok(fresh.clone()), "first call");
        assert_eq!(call(req), Ok(fresh), "remembered call");
    }
    assert_ne!(run_uncached(&base), run_uncached(&moved));
}

#[test]
fn a_request_carrying_a_secret_is_answered_fresh_and_never_remembered_whole() {
    use fabric_function::memo::Memo;
    use fabric_function::run_uncached;

    let memo = Memo::default();
    let base = running_request(true);
    let fresh = run_uncached(&base);
    assert!(xr_status(&fresh)["phase"] == json!("Running"), "{fresh:?}");
    for _ in 0..3 {
        assert_eq!(run(&base), fresh);
        memo.remember_answer(&base, &fresh);
        assert_eq!(memo.answer(&base), None);
        assert_eq!(memo.answers(), (0, 0));
    }
    // Another key in the Secret is seen at once.
    let other = with_required(
        base.clone(),
        keys::REQUIREMENT,
        &[secret("team-a", "admin-keys", KEY_A)],
    );
    let other_fresh = run_uncached(&other);
    assert_ne!(other_fresh, fresh);
    assert_eq!(run(&other), other_fresh);
    assert_eq!(run(&base), fresh);
}

/// A protobuf Struct's fields are a hash map, iterated in a different order
/// each time the same bytes are decoded (found by fuzzing: the Fatal
/// message listed the Input's problems in a different order on every call,
/// so Crossplane saw a new message each reconcile). Two decodes of one
/// request must get the same answer.
#[test]
fn the_same_request_bytes_always_get_the_same_answer() {
    use function_sdk_rust::proto::v1::RunFunctionRequest;
    use prost::Message;

    let mut bad_input = input("bpg");
    let mut bad_xr = machine();
    for i in 0..12 {
        bad_input[format!("stray{i}")] = json!(i);
        bad_xr["spec"][format!("stray{i}")] = json!(i);
    }
    for (what, req) in [
        ("bad input", request(&machine(), Some(&bad_input), &[])),
        ("bad machine", request(&bad_xr, Some(&input("bpg")), &[])),
    ] {
        let bytes = req.encode_to_vec();
        let decode = || RunFunctionRequest::decode(bytes.as_slice()).unwrap();
        let first = fabric_function::run_uncached(&decode());
        let message = fatal(&first).unwrap_or_else(|| panic!("{what}: not refused"));
        assert!(message.contains("stray11"), "{what}: {message}");
        for _ in 0..8 {
            assert_eq!(fabric_function::run_uncached(&decode()), first, "{what}");
        }
    }
}

#[test]
fn a_vm_created_with_user_data_alone_keeps_reading_proxmoxs_meta_data_and_network() {
    // Created by an earlier function, which uploaded only user-data: its
    // cloud-init fields are create-time only, so they stay as they were.
    let xr = with_phase(machine(), "Running");
    let first = run(&request(&xr, Some(&input("bpg")), &[]));
    let snippet = desired(&first, bpg::SNIPPET).unwrap_or_default();
    let mut old_vm = json!({
        "apiVersion": "virtualenvironmentvm.proxmoxbpg.m.crossplane.io/v1alpha1",
        "kind": "EnvironmentVM",
        "spec": {"initProvider": {"initialization": [{
            "datastoreId": "local-zfs",
            "userDataFileId": "local:snippets/old.user-data.yaml",
            "ipConfig": [{"ipv4": [{"address": "10.0.1.10/24", "gateway": "10.0.1.1"}]}],
        }]}},
    });
    old_vm = observed_ready(&old_vm, json!({"vmId": 104}));
    let rsp = run(&request(
        &xr,
        Some(&input("bpg")),
        &[
            (bpg::SNIPPET, observed_creating(&snippet)),
            (bpg::VM, old_vm),
        ],
    ));
    let vm = desired(&rsp, bpg::VM).unwrap_or_default();
    let init = &vm["spec"]["initProvider"]["initialization"][0];
    assert_eq!(init["userDataFileId"], "local:snippets/old.user-data.yaml");
    assert!(
        init.get("metaDataFileId").is_none() && init.get("networkDataFileId").is_none(),
        "{init}"
    );
    assert_eq!(
        init["ipConfig"],
        json!([{"ipv4": [{"address": "10.0.1.10/24", "gateway": "10.0.1.1"}]}])
    );
    assert_eq!(xr_status(&rsp)["phase"], "Running");
}

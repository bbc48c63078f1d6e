//! Real Terraform reads what Fabric composes (issue 13).
//!
//! Both backends end in a `main.tf.json`, where Terraform reads every string
//! as a template: provider-proxmox-bpg (upjet, Terraform-CLI kind) writes a
//! managed resource's `forProvider` with `initProvider` merged in, and
//! provider-terraform writes the Workspace's inline module. These tests put
//! exactly those strings through the Terraform binary named by
//! `FABRIC_TERRAFORM` (`eval "$(tftest/tools.sh)"` sets it; `./test.sh` and
//! `.ci/run` do) and require what comes out to be what the VM must receive.
//!
//! - Every example, every stage, both backends: each bpg managed resource's
//!   parameters become the `input` of a `terraform_data` resource, as upjet
//!   would write them; each Workspace module becomes a child module whose
//!   Proxmox resources are `terraform_data` with the same arguments, its
//!   `varmap` given as a `.tfvars.json` file as provider-terraform does.
//!   One `terraform apply` with local state and no network reads them all.
//! - A property test does the same for generated machines whose SSH key
//!   comments and flake references hold `${`, `%{`, `$${` and backslashes.
//! - The bpg Terraform provider itself (built by tools.sh, installed from a
//!   filesystem mirror) validates every Workspace module.
//!
//! Without `FABRIC_TERRAFORM` the tests fail when `CI` is set, and say they
//! were skipped otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fabric_function::{bpg, keys, run_uncached, terraform};
use function_sdk_rust::proto::v1::RunFunctionResponse;
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

use crate::support::*;

/// A Terraform binary and the filesystem mirror holding the bpg provider.
struct Terraform {
    binary: PathBuf,
    mirror: Option<PathBuf>,
}

fn terraform_or_skip(test: &str) -> Option<Terraform> {
    let binary = std::env::var_os("FABRIC_TERRAFORM").filter(|b| !b.is_empty());
    let Some(binary) = binary else {
        let why = "FABRIC_TERRAFORM is not set: run `eval \"$(tftest/tools.sh)\"` first (./test.sh and .ci/run do)";
        assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
        eprintln!("{test}: SKIPPED, {why}");
        return None;
    };
    Some(Terraform {
        binary: PathBuf::from(binary),
        mirror: std::env::var_os("FABRIC_TERRAFORM_PROVIDER_MIRROR")
            .filter(|m| !m.is_empty())
            .map(PathBuf::from),
    })
}

impl Terraform {
    /// Runs terraform in `dir` with a CLI configuration of the test's own
    /// (never the user's ~/.terraformrc), offline; its stdout, or a panic
    /// with everything it said.
    fn run(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new(&self.binary)
            .args(args)
            .current_dir(dir)
            .env("TF_CLI_CONFIG_FILE", dir.join("cli.tfrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("TF_DATA_DIR")
            .env_remove("TF_WORKSPACE")
            .env_remove("TF_CLI_ARGS")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "terraform {} failed in {}:\n{}\n{}",
            args.join(" "),
            dir.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// A CLI configuration installing providers from the mirror only.
    fn cli_config(&self, with_provider: bool) -> String {
        match (&self.mirror, with_provider) {
            (Some(mirror), true) => format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path = {}\n  }}\n}}\n",
                json!(mirror.display().to_string())
            ),
            (None, true) => panic!(
                "FABRIC_TERRAFORM_PROVIDER_MIRROR is not set: run `eval \"$(tftest/tools.sh)\"` first"
            ),
            (_, false) => String::new(),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Terraform's reading of a template made only of literal text, written
/// here from Terraform's documentation (not from Fabric's escaping): `$${`
/// is `${`, `%%{` is `%{`, everything else is itself.
fn as_terraform_reads(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("$${") {
            out.push_str("${");
            rest = &rest[3..];
        } else if rest.starts_with("%%{") {
            out.push_str("%{");
            rest = &rest[3..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// What an expression holding only literal text evaluates to: every string
/// as Terraform reads it.
fn literal_value(value: &Json) -> Json {
    match value {
        Json::String(s) => Json::String(as_terraform_reads(s)),
        Json::Array(items) => Json::Array(items.iter().map(literal_value).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), literal_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A leaf whose value the test does not predict (a reference to another
/// resource's computed id).
const ANY: &str = "\u{0}any";

/// Equal as Terraform values: numbers by value (the function's Structs
/// carry them as floats), `ANY` matches anything. Differences go to `diffs`.
fn compare(path: &str, got: &Json, want: &Json, diffs: &mut Vec<String>) {
    match (got, want) {
        (_, Json::String(w)) if w == ANY => {}
        (Json::Number(g), Json::Number(w)) if g.as_f64() == w.as_f64() => {}
        (Json::Object(g), Json::Object(w)) => {
            for key in g
                .keys()
                .chain(w.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                compare(
                    &format!("{path}.{key}"),
                    g.get(key).unwrap_or(&Json::Null),
                    w.get(key).unwrap_or(&Json::Null),
                    diffs,
                );
            }
        }
        (Json::Array(g), Json::Array(w)) if g.len() == w.len() => {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                compare(&format!("{path}[{i}]"), g, w, diffs);
            }
        }
        (g, w) if g == w => {}
        (g, w) => diffs.push(format!(
            "{path}: Terraform read {}, the VM must receive {}",
            short(g),
            short(w)
        )),
    }
}

fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// upjet's merge of `initProvider` into `forProvider` (mergo without
/// overwrite): forProvider wins, maps merge key by key.
fn merged_parameters(object: &Json) -> Json {
    fn merge(into: &mut Json, from: &Json) {
        if let (Json::Object(into), Json::Object(from)) = (into, from) {
            for (k, v) in from {
                match into.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        into.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let mut params = object
        .pointer("/spec/forProvider")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(init) = object.pointer("/spec/initProvider") {
        merge(&mut params, init);
    }
    params
}

// ---------------------------------------------------------------------------
// The cases: every example, every stage, both backends.

/// One composition request and the user-data the VM must receive.
struct Case {
    label: String,
    xr: Json,
    input: Json,
    secrets: Vec<Json>,
    observed: Vec<(String, Json)>,
}

fn yaml_docs(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Json> = serde_saphyr::from_str_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn input_of(composition: &Path) -> Json {
    yaml_docs(composition)
        .iter()
        .flat_map(|d| {
            d.pointer("/spec/pipeline")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find_map(|step| step.get("input").filter(|i| i["kind"] == "Input").cloned())
        .unwrap_or_else(|| panic!("{}: no fabric Input", composition.display()))
}

fn observed_file(path: &Path) -> Vec<(String, Json)> {
    yaml_docs(path)
        .into_iter()
        .map(|d| {
            let name = d
                .pointer("/metadata/annotations/crossplane.io~1composition-resource-name")
                .and_then(Json::as_str)
                .unwrap_or_else(|| panic!("{}: no composition-resource-name", path.display()))
                .to_string();
            (name, d)
        })
        .collect()
}

/// Runs the function as Crossplane would, answering its Secret requirement.
fn compose(case: &Case) -> RunFunctionResponse {
    let observed: Vec<(&str, Json)> = case
        .observed
        .iter()
        .map(|(n, o)| (n.as_str(), o.clone()))
        .collect();
    let req = request(&case.xr, Some(&case.input), &observed);
    let rsp = run_uncached(&req);
    if rsp
        .requirements
        .as_ref()
        .is_some_and(|r| r.resources.contains_key(keys::REQUIREMENT))
        && !case.secrets.is_empty()
    {
        return run_uncached(&with_required(req, keys::REQUIREMENT, &case.secrets));
    }
    rsp
}

/// The stages a machine goes through, observed as the provider would
/// report them: nothing yet; the snippet Ready; the VM Ready (bpg), or the
/// Workspace applied (terraform).
fn stages(label: &str, xr: &Json, input: &Json, secrets: &[Json]) -> Vec<Case> {
    let case = |stage: &str, observed: Vec<(String, Json)>| Case {
        label: format!("{label}, {stage}"),
        xr: xr.clone(),
        input: input.clone(),
        secrets: secrets.to_vec(),
        observed,
    };
    let first = case("nothing observed", vec![]);
    let rsp = compose(&first);
    assert_eq!(fatal(&rsp), None, "{}", first.label);
    let mut cases = vec![];
    if input["backend"] == "terraform" {
        let ws =
            desired(&rsp, terraform::WORKSPACE).unwrap_or_else(|| panic!("{label}: no Workspace"));
        let ready = observed_ready(
            &ws,
            json!({"outputs": {"vm_id": "104", "user_data_file_id": "local:snippets/x.yaml"}}),
        );
        cases.push(first);
        cases.push(case(
            "workspace applied",
            vec![(terraform::WORKSPACE.into(), ready)],
        ));
        return cases;
    }
    // Every snippet the function composed, observed Ready with the volume
    // id Proxmox would give it: the VM comes only once all are.
    let snippets: Vec<(String, Json)> = SNIPPETS
        .iter()
        .filter_map(|name| desired(&rsp, name).map(|s| (*name, s)))
        .map(|(name, snippet)| {
            let datastore = as_terraform_reads(
                snippet["spec"]["forProvider"]["datastoreId"]
                    .as_str()
                    .unwrap_or_default(),
            );
            let file = as_terraform_reads(
                snippet["spec"]["initProvider"]["sourceRaw"][0]["fileName"]
                    .as_str()
                    .unwrap_or_default(),
            );
            let ready = observed_ready(
                &snippet,
                json!({"id": format!("{datastore}:snippets/{file}")}),
            );
            (name.to_string(), ready)
        })
        .collect();
    assert!(!snippets.is_empty(), "{label}: no snippet");
    cases.push(first);
    let second = case("snippets ready", snippets.clone());
    let rsp = compose(&second);
    let vm = desired(&rsp, bpg::VM).unwrap_or_else(|| panic!("{}: no VM", second.label));
    cases.push(second);
    let mut vm_ready = snippets;
    vm_ready.push((
        bpg::VM.into(),
        observed_ready(&vm, json!({"id": "104", "vmId": 104})),
    ));
    cases.push(case("VM ready", vm_ready));
    cases
}

/// Every example: example/ (with its observed fixtures too) and
/// examples/machines, on both backends, at every stage.
fn example_cases() -> Vec<Case> {
    let root = workspace();
    let ex = root.join("example");
    let secrets: Vec<Json> = yaml_docs(&ex.join("secret.yaml"));
    let bpg_input = input_of(&ex.join("composition.yaml"));
    let tf_input = input_of(&ex.join("composition-terraform.yaml"));
    let xr = yaml_docs(&ex.join("xr.yaml")).remove(0);
    let xmachine = yaml_docs(&ex.join("xmachine.yaml")).remove(0);
    let xmachine_input = input_of(&ex.join("composition-xmachine.yaml"));

    let mut cases = vec![];
    // The committed fixtures of example/observed.
    for (stage, file, input) in [
        ("snippet-ready.yaml", "snippet-ready.yaml", &bpg_input),
        ("vm-ready.yaml", "vm-ready.yaml", &bpg_input),
        ("workspace-ready.yaml", "workspace-ready.yaml", &tf_input),
    ] {
        cases.push(Case {
            label: format!("example/xr.yaml, example/observed/{stage}"),
            xr: xr.clone(),
            input: input.clone(),
            secrets: secrets.clone(),
            observed: observed_file(&ex.join("observed").join(file)),
        });
    }
    cases.push(Case {
        label: "example/xmachine.yaml, example/observed/xmachine-snippet-ready.yaml".into(),
        xr: xmachine.clone(),
        input: xmachine_input.clone(),
        secrets: vec![],
        observed: observed_file(&ex.join("observed/xmachine-snippet-ready.yaml")),
    });
    cases.extend(stages("example/xr.yaml, bpg", &xr, &bpg_input, &secrets));
    cases.extend(stages(
        "example/xr.yaml, terraform",
        &xr,
        &tf_input,
        &secrets,
    ));
    cases.extend(stages(
        "example/xmachine.yaml, bpg",
        &xmachine,
        &xmachine_input,
        &[],
    ));
    cases.extend(stages(
        "example/xmachine.yaml, terraform",
        &xmachine,
        &tf_input,
        &[],
    ));

    let mut machines: Vec<PathBuf> = std::fs::read_dir(root.join("examples/machines"))
        .unwrap_or_else(|e| panic!("examples/machines: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    machines.sort();
    assert!(!machines.is_empty(), "no examples/machines/*.yaml");
    for path in machines {
        let name = format!(
            "examples/machines/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        for doc in yaml_docs(&path)
            .into_iter()
            .filter(|d| d["kind"] == "Machine")
        {
            cases.extend(stages(&format!("{name}, bpg"), &doc, &bpg_input, &secrets));
            cases.extend(stages(
                &format!("{name}, terraform"),
                &doc,
                &tf_input,
                &secrets,
            ));
        }
    }
    cases
}

/// The user-data `fabric render` gives for the case's machine, computed
/// here from the Machine, its keys and the input, not from the function.
/// The composed snippets of backend bpg, by composition name.
const SNIPPETS: [&str; 3] = [bpg::SNIPPET, bpg::META_DATA, bpg::NETWORK_CONFIG];

/// What the VM must receive in each snippet, rendered independently of the
/// function, by composition name.
fn rendered_files(case: &Case) -> Vec<(&'static str, String)> {
    let machine = fabric_model::Machine::from_json(&case.xr).unwrap_or_else(|d| panic!("{d:?}"));
    let mut files = vec![
        (bpg::SNIPPET, rendered_user_data(case)),
        (
            bpg::META_DATA,
            fabric_cloudinit::render_meta_data(&machine)
                .unwrap_or_else(|e| panic!("{}: {e}", case.label)),
        ),
    ];
    if let Some(n) = fabric_cloudinit::render_network_config(&machine)
        .unwrap_or_else(|e| panic!("{}: {e}", case.label))
    {
        files.push((bpg::NETWORK_CONFIG, n));
    }
    files
}

/// The rendered content of the snippet composed as `name`.
fn rendered_file<'a>(files: &'a [(&str, String)], name: &str, label: &str) -> &'a str {
    files
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c.as_str())
        .unwrap_or_else(|| panic!("{label}: composed a {name} snippet that render does not write"))
}

fn rendered_user_data(case: &Case) -> String {
    use base64::Engine;
    let machine = fabric_model::Machine::from_json(&case.xr).unwrap_or_else(|d| panic!("{d:?}"));
    let namespace = case
        .xr
        .pointer("/metadata/namespace")
        .and_then(Json::as_str);
    let secret_name = case
        .xr
        .pointer("/spec/bootstrap/sshAuthorizedKeysSecretRef/name")
        .and_then(Json::as_str);
    let keys: Option<Vec<fabric_model::AuthorizedKey>> = secret_name.map(|name| {
        let secret = case
            .secrets
            .iter()
            .find(|s| {
                s.pointer("/metadata/name").and_then(Json::as_str) == Some(name)
                    && s.pointer("/metadata/namespace").and_then(Json::as_str) == namespace
            })
            .unwrap_or_else(|| panic!("{}: no Secret {name}", case.label));
        let mut keys = vec![];
        for (_, value) in secret["data"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
            for line in String::from_utf8_lossy(&bytes).lines() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    keys.push(
                        fabric_model::sshkeys::parse(line).unwrap_or_else(|e| panic!("{e:?}")),
                    );
                }
            }
        }
        keys
    });
    let fabric_flake = case
        .input
        .pointer("/bootstrap/fabricFlake")
        .and_then(Json::as_str)
        .map_or_else(
            || fabric_cloudinit::DEFAULT_FABRIC_FLAKE.to_string(),
            str::to_string,
        );
    fabric_cloudinit::render_user_data(
        &machine,
        keys.as_deref(),
        &fabric_cloudinit::RenderOptions { fabric_flake },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.label))
}

// ---------------------------------------------------------------------------
// One Terraform configuration for many composed responses.

/// A root module reading many composed responses, and what each of its
/// outputs must be.
#[derive(Default)]
struct Reading {
    root: Map<String, Json>,
    tfvars: Map<String, Json>,
    /// Child module directories and their main.tf.json.
    children: Vec<(String, Json)>,
    /// Output name, case label, expected value.
    expected: Vec<(String, String, Json)>,
    cases: usize,
}

impl Reading {
    fn section(&mut self, name: &str) -> &mut Map<String, Json> {
        self.root
            .entry(name)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap_or_else(|| unreachable!())
    }

    fn output(&mut self, name: &str, expression: String, label: &str, want: Json) {
        self.section("output")
            .insert(name.into(), json!({"value": expression}));
        self.expected.push((name.into(), label.into(), want));
    }

    /// Adds everything the case composed.
    fn add(&mut self, case: &Case, rsp: &RunFunctionResponse) {
        let id = format!("c{}", self.cases);
        self.cases += 1;
        assert_eq!(fatal(rsp), None, "{}", case.label);
        let files = rendered_files(case);
        let mut composed = 0;
        for name in [bpg::SNIPPET, bpg::META_DATA, bpg::NETWORK_CONFIG, bpg::VM] {
            let Some(object) = desired(rsp, name) else {
                continue;
            };
            composed += 1;
            // What upjet writes as the resource's arguments.
            let params = merged_parameters(&object);
            let resource = format!("{id}_{}", name.replace('-', "_"));
            let mut want = literal_value(&params);
            if name != bpg::VM {
                want["sourceRaw"][0]["data"] = json!(rendered_file(&files, name, &case.label));
            }
            self.section("resource")
                .entry("terraform_data")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap_or_else(|| unreachable!())
                .insert(resource.clone(), json!({"input": params}));
            self.output(
                &resource,
                format!("${{terraform_data.{resource}.output}}"),
                &format!("{}: {} parameters", case.label, object["kind"]),
                want,
            );
        }
        if let Some(ws) = desired(rsp, terraform::WORKSPACE) {
            composed += 1;
            self.add_workspace(&id, case, &ws, &files);
        }
        assert!(composed > 0, "{}: composed nothing", case.label);
    }

    /// The Workspace's module as a child module, its Proxmox resources as
    /// `terraform_data` with the same arguments; its varmap as the values
    /// of root variables set from a `.tfvars.json` file, as
    /// provider-terraform passes them.
    fn add_workspace(&mut self, id: &str, case: &Case, ws: &Json, files: &[(&str, String)]) {
        let fp = &ws["spec"]["forProvider"];
        let module: Json = serde_json::from_str(fp["module"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: module is not JSON: {e}", case.label));
        let varmap = fp["varmap"].as_object().cloned().unwrap_or_default();

        let mut renames = vec![];
        let resources = module["resource"].as_object().cloned().unwrap_or_default();
        for (ty, named) in &resources {
            for name in named.as_object().into_iter().flatten().map(|(n, _)| n) {
                renames.push((
                    format!("${{{ty}.{name}."),
                    format!("${{terraform_data.{ty}__{name}."),
                ));
            }
        }
        fn rewrite(v: &mut Json, renames: &[(String, String)]) {
            match v {
                Json::String(s) => {
                    for (from, to) in renames {
                        if s.contains(from.as_str()) {
                            *s = s.replace(from.as_str(), to);
                        }
                    }
                }
                Json::Array(items) => items.iter_mut().for_each(|i| rewrite(i, renames)),
                Json::Object(map) => map.values_mut().for_each(|i| rewrite(i, renames)),
                _ => {}
            }
        }
        // What each argument must evaluate to: a variable's value, a
        // literal as Terraform reads it, or (a reference) anything.
        fn expected(v: &Json, varmap: &Map<String, Json>) -> Json {
            match v {
                Json::String(s) if s.starts_with("${var.") && s.ends_with('}') => varmap
                    .get(&s["${var.".len()..s.len() - 1])
                    .cloned()
                    .unwrap_or_else(|| panic!("{s}: not in varmap")),
                Json::String(s) if s.starts_with("${") => json!(ANY),
                Json::String(s) => json!(as_terraform_reads(s)),
                Json::Array(items) => {
                    Json::Array(items.iter().map(|i| expected(i, varmap)).collect())
                }
                Json::Object(map) => Json::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), expected(v, varmap)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }

        let mut child_resources = Map::new();
        let mut child_outputs = Map::new();
        for (ty, named) in &resources {
            for (name, args) in named.as_object().into_iter().flatten() {
                let mut args = args.clone();
                if let Some(a) = args.as_object_mut() {
                    a.remove("lifecycle");
                }
                let mut want = expected(&args, &varmap);
                if ty == "proxmox_virtual_environment_file" {
                    want["source_raw"]["data"] =
                        json!(rendered_file(files, &name.replace('_', "-"), &case.label));
                }
                let resource = format!("{ty}__{name}");
                let mut input = args;
                rewrite(&mut input, &renames);
                child_resources.insert(resource.clone(), json!({"input": input}));
                child_outputs.insert(
                    resource.clone(),
                    json!({"value": format!("${{terraform_data.{resource}.output}}")}),
                );
                let output = format!("{id}__{resource}");
                self.output(
                    &output,
                    format!("${{module.{id}.{resource}}}"),
                    &format!("{}: Workspace module, {ty}.{name}", case.label),
                    want,
                );
            }
        }
        let child = json!({
            "variable": module["variable"],
            "resource": {"terraform_data": child_resources},
            "output": child_outputs,
        });
        // The module's variables, set from the root's, set from tfvars.
        let mut arguments = Map::new();
        arguments.insert("source".into(), json!(format!("./{id}")));
        for (var, decl) in module["variable"].as_object().into_iter().flatten() {
            let root_var = format!("{id}_{var}");
            self.section("variable")
                .insert(root_var.clone(), decl.clone());
            arguments.insert(var.clone(), json!(format!("${{var.{root_var}}}")));
            let value = varmap
                .get(var)
                .cloned()
                .unwrap_or_else(|| panic!("{}: variable {var} not in varmap", case.label));
            self.tfvars.insert(root_var, value);
        }
        self.section("module")
            .insert(id.to_string(), Json::Object(arguments));
        self.children.push((id.to_string(), child));
    }

    /// Applies the whole reading with real Terraform and compares every
    /// output with what the VM must receive.
    fn apply(self, tf: &Terraform) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        write(&d.join("cli.tfrc"), &tf.cli_config(false));
        write(
            &d.join("main.tf.json"),
            &Json::Object(self.root).to_string(),
        );
        write(
            &d.join("fabric.tfvars.json"),
            &Json::Object(self.tfvars).to_string(),
        );
        for (id, child) in &self.children {
            std::fs::create_dir_all(d.join(id)).unwrap_or_else(|e| panic!("{e}"));
            write(&d.join(id).join("main.tf.json"), &child.to_string());
        }
        tf.run(d, &["init", "-input=false", "-backend=false", "-no-color"]);
        tf.run(
            d,
            &[
                "apply",
                "-auto-approve",
                "-input=false",
                "-lock=false",
                "-no-color",
                "-var-file=fabric.tfvars.json",
            ],
        );
        let outputs: Json = serde_json::from_str(&tf.run(d, &["output", "-json", "-no-color"]))
            .unwrap_or_else(|e| panic!("terraform output -json: {e}"));
        let mut diffs = vec![];
        for (name, label, want) in &self.expected {
            let got = &outputs[name]["value"];
            let mut here = vec![];
            compare("", got, want, &mut here);
            diffs.extend(here.into_iter().map(|d| format!("{label}: {d}")));
        }
        assert!(
            diffs.is_empty(),
            "Terraform did not read {} value(s) as the VM must receive them:\n{}",
            diffs.len(),
            diffs.join("\n")
        );
        assert!(!self.expected.is_empty());
    }
}

#[test]
fn every_example_at_every_stage_survives_terraforms_reading_byte_for_byte() {
    let Some(tf) = terraform_or_skip("every_example_at_every_stage") else {
        return;
    };
    let cases = example_cases();
    let mut reading = Reading::default();
    let mut backends = BTreeMap::new();
    for case in &cases {
        let rsp = compose(case);
        *backends
            .entry(case.input["backend"].as_str().unwrap_or("bpg").to_string())
            .or_insert(0) += 1;
        reading.add(case, &rsp);
    }
    assert!(
        backends.get("bpg").is_some_and(|n| *n >= 10)
            && backends.get("terraform").is_some_and(|n| *n >= 8),
        "{backends:?}"
    );
    reading.apply(&tf);
}

// ---------------------------------------------------------------------------
// Generated machines.

/// Text a user may put where Fabric copies it into user-data, built from
/// pieces Terraform treats specially.
fn tricky(allowed: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(allowed), 1..8).prop_map(|parts| parts.concat())
}

const COMMENT_PIECES: &[&str] = &[
    "${",
    "%{",
    "$${",
    "%%{",
    "$$${",
    "}",
    "{",
    "$",
    "%",
    "\\",
    "\\\\",
    "\\n",
    "\"",
    "'",
    " ",
    "a",
    "PATH:-/bin",
    "if x",
    "endif",
    "~",
];
const FLAKE_PIECES: &[&str] = &[
    "${", "%{", "$${", "%%{", "}", "{", "$", "%", "\\", "a", "-", "PATH:-",
];

fn tricky_machine() -> impl Strategy<Value = (Json, bool)> {
    (tricky(COMMENT_PIECES), tricky(FLAKE_PIECES), any::<bool>()).prop_map(
        |(comment, path, terraform)| {
            let mut m = machine();
            m["spec"]["bootstrap"]["sshAuthorizedKeys"] = json!([format!("{KEY_A} {comment}")]);
            // The path must still name a repository for the Machine to be valid.
            m["spec"]["nix"]["flakeRef"] = json!(format!(
                "git+https://example.org/org/fleet{path}?ref=main#web01"
            ));
            (m, terraform)
        },
    )
}

proptest! {
    // Each case is one Terraform run over 12 machines: a handful suffices,
    // and each takes seconds.
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 16, ..ProptestConfig::default() })]
    #[test]
    fn generated_machines_with_template_sequences_survive_terraforms_reading(
        machines in prop::collection::vec(tricky_machine(), 12)
    ) {
        let Some(tf) = terraform_or_skip("generated_machines") else {
            return Ok(());
        };
        let mut reading = Reading::default();
        for (i, (xr, on_terraform)) in machines.iter().enumerate() {
            let backend = if *on_terraform { "terraform" } else { "bpg" };
            for case in stages(&format!("generated machine {i}, {backend}"), xr, &input(backend), &[]) {
                let rsp = compose(&case);
                reading.add(&case, &rsp);
            }
        }
        reading.apply(&tf);
    }
}

// ---------------------------------------------------------------------------
// upjet's ignore_changes covers every escaped initProvider field.

/// Whether upjet puts the leaf at `path` of `initProvider` under
/// `lifecycle.ignore_changes`. upjet's GetTerraformIgnoreChanges
/// (pkg/resource/ignored.go) ignores a field of initProvider from the
/// first key, or list index, on its path that forProvider does not have.
fn ignored_by_upjet(for_provider: &Json, path: &[PathStep]) -> bool {
    let mut cur = Some(for_provider);
    for step in path {
        cur = match (cur, step) {
            (Some(Json::Object(m)), PathStep::Key(k)) => m.get(k),
            (Some(Json::Array(items)), PathStep::Index(i)) => items.get(*i),
            _ => None,
        };
        if cur.is_none() {
            return true;
        }
    }
    false
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn leaves(value: &Json, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    match value {
        Json::Object(m) => {
            for (k, v) in m {
                path.push(PathStep::Key(k.clone()));
                leaves(v, path, out);
                path.pop();
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(PathStep::Index(i));
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

#[test]
fn every_init_provider_field_is_under_upjets_ignore_changes() {
    let mut checked = 0;
    for case in example_cases() {
        let rsp = compose(&case);
        for name in [bpg::SNIPPET, bpg::META_DATA, bpg::NETWORK_CONFIG, bpg::VM] {
            let Some(object) = desired(&rsp, name) else {
                continue;
            };
            let for_provider = object
                .pointer("/spec/forProvider")
                .cloned()
                .unwrap_or(Json::Null);
            let mut paths = vec![];
            if let Some(init) = object.pointer("/spec/initProvider") {
                leaves(init, &mut vec![], &mut paths);
            }
            for path in paths {
                assert!(
                    ignored_by_upjet(&for_provider, &path),
                    "{}: {} initProvider{path:?} is also in forProvider, so upjet does not ignore its changes: its escaped spec would be compared with the provider's state",
                    case.label,
                    object["kind"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} initProvider fields seen");
}

// ---------------------------------------------------------------------------
// The bpg Terraform provider validates the terraform backend's module.

#[test]
fn the_bpg_provider_validates_every_workspace_module() {
    let Some(tf) = terraform_or_skip("the_bpg_provider_validates") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    write(&d.join("cli.tfrc"), &tf.cli_config(true));
    let mut modules: Vec<(String, String)> = vec![];
    for case in example_cases() {
        if let Some(ws) = desired(&compose(&case), terraform::WORKSPACE) {
            let module = ws["spec"]["forProvider"]["module"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !modules.iter().any(|(_, m)| *m == module) {
                modules.push((case.label.clone(), module));
            }
        }
    }
    assert!(modules.len() >= 4, "only {} modules", modules.len());

    let validate = |module: &str| -> Json {
        write(&d.join("main.tf.json"), module);
        let out = Command::new(&tf.binary)
            .args(["validate", "-json", "-no-color"])
            .current_dir(d)
            .env("TF_CLI_CONFIG_FILE", d.join("cli.tfrc"))
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_PLUGIN_CACHE_DIR")
            .env_remove("TF_DATA_DIR")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "terraform validate: {e}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };

    // Offline: the provider comes from the mirror, or init fails.
    write(&d.join("main.tf.json"), &modules[0].1);
    tf.run(d, &["init", "-input=false", "-backend=false", "-no-color"]);
    let lock = std::fs::read_to_string(d.join(".terraform.lock.hcl")).unwrap_or_default();
    let version = std::env::var("FABRIC_TERRAFORM_PROVIDER_VERSION").unwrap_or_default();
    assert!(
        lock.contains("registry.terraform.io/bpg/proxmox")
            && lock.contains(&format!("\"{version}\"")),
        "init did not install bpg/proxmox {version}:\n{lock}"
    );

    for (label, module) in &modules {
        let result = validate(module);
        assert_eq!(
            result["valid"], true,
            "{label}: the bpg provider refuses the Workspace module:\n{result:#}"
        );
    }

    // The check can fail: the provider's schema refuses an argument it does
    // not have, and Terraform an unescaped snippet.
    let mut wrong: Json = serde_json::from_str(&modules[0].1).unwrap_or_default();
    wrong["resource"]["proxmox_virtual_environment_vm"]["machine"]["cpu"]["coers"] = json!(2);
    let result = validate(&wrong.to_string());
    assert_eq!(result["valid"], false, "{result:#}");
    assert!(result.to_string().contains("coers"), "{result:#}");

    let mut unescaped: Json = serde_json::from_str(&modules[0].1).unwrap_or_default();
    let data = &mut unescaped["resource"]["proxmox_virtual_environment_file"]["user_data"]
        ["source_raw"]["data"];
    *data = json!(as_terraform_reads(data.as_str().unwrap_or_default()));
    let result = validate(&unescaped.to_string());
    assert_eq!(result["valid"], false, "{result:#}");
}

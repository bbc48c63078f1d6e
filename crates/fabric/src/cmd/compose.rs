//! `fabric compose`: run the composition function offline, in process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fabric_model::machine::{parse_node, ParseMode, Parsed};
use fabric_model::source::Node;
use function_sdk_rust::proto::v1::{
    resource_selector, RequestMeta, Resource, Resources, RunFunctionRequest, RunFunctionResponse,
    Severity, State, Status as ConditionStatus,
};
use function_sdk_rust::resource::{json_to_struct, struct_to_json};
use serde_json::{json, Value as Json};

use crate::exit::{self, read_text, read_yaml, Unusable};

/// The annotation Crossplane (and `crossplane render`) uses for a composed
/// resource's composition name.
pub const RESOURCE_NAME_ANNOTATION: &str = "crossplane.io/composition-resource-name";

/// Crossplane stops asking for required resources after this many rounds.
const MAX_REQUIREMENT_ROUNDS: usize = 5;

/// Compose a Machine offline: print the managed resources Crossplane would
/// create for it.
///
/// Runs the composition function in process, on the same code path as
/// `fabric function`, with no cluster. XR.yaml is the Machine (or
/// XMachine). The desired composed resources go to stdout as YAML
/// documents, each annotated with its composition name
/// (crossplane.io/composition-resource-name); the function's results and
/// the Machine's status go to stderr.
///
/// Composition is staged like in a cluster: first the user-data snippet;
/// the VM only once the snippet is observed Ready. Pass the observed
/// resources with --observed to see later stages (a file of composed
/// resources with a Ready=True condition and status.atProvider, annotated
/// like the output).
///
/// Exit status: 0 composed, or waiting (e.g. for a Secret); 1 a Fatal
/// result (an invalid Machine or Input), or an observed resource without
/// its annotation; 2 a file does not exist, cannot be read, is not UTF-8
/// text, is not YAML, or holds no Machine (--input: no Input; --secret: no
/// Secret).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    fabric compose example/xr.yaml --input example/composition.yaml\n  \
    fabric compose example/xr.yaml --input example/composition.yaml \\\n      \
    --observed example/observed/snippet-ready.yaml --secret example/secret.yaml")]
pub struct Args {
    /// The Machine (or XMachine) manifest.
    #[arg(value_name = "XR.yaml")]
    pub xr: PathBuf,

    /// The function input: a fabric.kubelize.io/v1beta1 Input, or a
    /// Composition whose function-fabric pipeline step carries one.
    /// Without it every default applies and no template is known.
    #[arg(long, value_name = "INPUT.yaml")]
    pub input: Option<PathBuf>,

    /// Observed composed resources, as Crossplane would send them; each
    /// names its composition name in the crossplane.io/composition-resource-name
    /// annotation. Repeatable; a file may hold several documents.
    #[arg(long, value_name = "FILE.yaml")]
    pub observed: Vec<PathBuf>,

    /// Secrets the function may ask for (the Machine's
    /// spec.bootstrap.sshAuthorizedKeysSecretRef and
    /// spec.nix.credentialsSecretRef). Only a Secret in the
    /// Machine's own namespace is used; one without metadata.namespace is
    /// placed there, as kubectl apply would. Repeatable.
    #[arg(long, value_name = "SECRET.yaml")]
    pub secret: Vec<PathBuf>,
}

/// A problem with the command's files: one that cannot be used at all
/// (exit 2), or content that is wrong (exit 1).
#[derive(Debug)]
struct FileError {
    code: u8,
    message: String,
}

impl FileError {
    fn unusable(message: String) -> Self {
        Self {
            code: exit::USAGE,
            message,
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            code: exit::FAILED,
            message,
        }
    }
}

impl From<Unusable> for FileError {
    fn from(u: Unusable) -> Self {
        Self::unusable(u.to_string())
    }
}

pub fn run(args: Args) -> ExitCode {
    match compose(&args) {
        Ok((rsp, out)) => {
            if let Err(e) = crate::output::to_stdout(&out) {
                eprintln!("fabric compose: cannot write to stdout: {e}");
                return ExitCode::from(exit::USAGE);
            }
            report(&rsp, &args.xr)
        }
        Err(FileError { code, message }) => {
            // Already `FILE[:LINE:COL]: what (what to do)`, as in every command.
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

/// A file's documents, read by the reader every command uses (so a file
/// that is not YAML is refused the same way, `FILE:LINE:COL`, exit 2), then
/// as JSON values for the function, which wants numbers and booleans typed.
fn read_docs(path: &Path) -> Result<Vec<Json>, FileError> {
    read_both(path).map(|(_, docs)| docs)
}

/// [`read_docs`], and the documents with their positions.
fn read_both(path: &Path) -> Result<(Vec<Node>, Vec<Json>), FileError> {
    let nodes = read_yaml(path)?;
    let text = read_text(path)?;
    let docs: Vec<Json> = serde_saphyr::from_str_multiple(&text).map_err(|e| {
        // The reader above accepted it; the second parser may still differ.
        FileError::unusable(
            Unusable::new(path.display().to_string(), format!("invalid YAML: {e}")).to_string(),
        )
    })?;
    Ok((nodes, docs.into_iter().filter(|d| !d.is_null()).collect()))
}

/// "an EnvironmentFile", "a Secret".
fn with_article(word: &str) -> String {
    let vowel = word
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {word}", if vowel { "an" } else { "a" })
}

fn kind(doc: &Json) -> Option<&str> {
    doc.get("kind").and_then(Json::as_str)
}

/// The input from an Input document, or from a Composition's fabric step.
fn input_from(path: &Path) -> Result<Json, FileError> {
    let docs = read_docs(path)?;
    if let Some(input) = docs.iter().find(|d| kind(d) == Some("Input")) {
        return Ok(input.clone());
    }
    for comp in docs.iter().filter(|d| kind(d) == Some("Composition")) {
        let steps = comp
            .pointer("/spec/pipeline")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let fabric = steps.iter().find(|s| {
            s.pointer("/input/apiVersion").and_then(Json::as_str)
                == Some(fabric_function::input::API_VERSION)
        });
        if let Some(input) = fabric.and_then(|s| s.get("input")) {
            return Ok(input.clone());
        }
    }
    Err(FileError::unusable(format!(
        "{}: holds no {} Input, nor a Composition with a step that has one",
        path.display(),
        fabric_function::input::API_VERSION
    )))
}

/// Builds the request, answers the function's Secret requirements from
/// --secret like Crossplane would, and renders the desired resources.
fn compose(args: &Args) -> Result<(RunFunctionResponse, String), FileError> {
    let xr = read_docs(&args.xr)?
        .into_iter()
        .find(|d| matches!(kind(d), Some("Machine" | "XMachine")))
        .ok_or_else(|| {
            FileError::unusable(format!(
                "{}: no Machine or XMachine in this file",
                args.xr.display()
            ))
        })?;
    let input = args.input.as_deref().map(input_from).transpose()?;

    let mut observed = BTreeMap::new();
    for path in &args.observed {
        for doc in read_docs(path)? {
            let name = doc
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(RESOURCE_NAME_ANNOTATION))
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    FileError::invalid(format!(
                        "{}: {} has no {RESOURCE_NAME_ANNOTATION} annotation, so it cannot be matched to a composed resource",
                        path.display(),
                        with_article(kind(&doc).unwrap_or("document"))
                    ))
                })?
                .to_string();
            observed.insert(name, resource(&doc));
        }
    }
    let mut secrets = Vec::new();
    let mut secret_files = Vec::new();
    for path in &args.secret {
        let (nodes, docs) = read_both(path)?;
        let before = secrets.len();
        secrets.extend(docs.into_iter().filter(|d| kind(d) == Some("Secret")));
        if secrets.len() == before {
            return Err(FileError::unusable(
                Unusable::new(
                    path.display().to_string(),
                    "holds no Secret (--secret takes a file of kind: Secret manifests)",
                )
                .to_string(),
            ));
        }
        secret_files.push((path.display().to_string(), nodes));
    }
    not_the_machines_secrets(&xr, &secret_files);

    let mut req = RunFunctionRequest {
        meta: Some(RequestMeta {
            tag: "fabric-compose".into(),
            capabilities: vec![],
        }),
        observed: Some(State {
            composite: Some(resource(&xr)),
            resources: observed.into_iter().collect(),
        }),
        desired: Some(State::default()),
        input: input.as_ref().and_then(Json::as_object).map(json_to_struct),
        ..Default::default()
    };
    let mut rsp = fabric_function::run(&req);
    for _ in 0..MAX_REQUIREMENT_ROUNDS {
        let Some(requirements) = rsp.requirements.clone() else {
            break;
        };
        let mut answered = std::collections::HashMap::new();
        for (name, sel) in &requirements.resources {
            let Some(resource_selector::Match::MatchName(wanted)) = &sel.r#match else {
                answered.insert(name.clone(), Resources::default());
                continue;
            };
            // The model's rule, which render and seed use too: by name and
            // namespace, a Secret without one being in the machine's.
            let items = secrets
                .iter()
                .filter(|d| {
                    d.get("apiVersion").and_then(Json::as_str) == Some(sel.api_version.as_str())
                        && kind(d) == Some(sel.kind.as_str())
                        && fabric_model::secret::is_machine_secret(
                            &Node::from_json(d),
                            wanted,
                            sel.namespace.as_deref(),
                        )
                })
                .map(|d| {
                    // As `kubectl apply` would place it: in the namespace asked.
                    let mut d = d.clone();
                    if let (Some(ns), Some(meta)) = (
                        &sel.namespace,
                        d.get_mut("metadata").and_then(Json::as_object_mut),
                    ) {
                        meta.entry("namespace").or_insert_with(|| json!(ns));
                    }
                    resource(&d)
                })
                .collect();
            answered.insert(name.clone(), Resources { items });
        }
        if answered == req.required_resources {
            break;
        }
        req.required_resources = answered;
        rsp = fabric_function::run(&req);
    }

    let mut out = String::new();
    let resources = rsp
        .desired
        .as_ref()
        .map(|d| {
            d.resources
                .iter()
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    for (name, r) in resources {
        let Some(s) = r.resource.as_ref() else {
            continue;
        };
        let mut doc = struct_to_json(s);
        if let Some(obj) = doc.as_object_mut() {
            let meta = obj.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let ann = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(RESOURCE_NAME_ANNOTATION.into(), json!(name));
                }
            }
        }
        let yaml = serde_saphyr::to_string(&in_manifest_order(doc))
            .map_err(|e| FileError::invalid(format!("cannot write {name} as YAML: {e}")))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok((rsp, out))
}

/// Names, on stderr, each --secret file that holds none of a Secret the
/// machine names (the keys, the fleet credential), with what it holds
/// instead: the function then waits for it, and the file to fix is one of
/// these.
fn not_the_machines_secrets(xr: &Json, files: &[(String, Vec<Node>)]) {
    let Ok(machine) = fabric_model::Machine::from_json(xr) else {
        return;
    };
    if machine.ssh_keys_secret.is_some() {
        let missing: Option<Vec<String>> = files
            .iter()
            .map(
                |(file, nodes)| match fabric_model::secret::keys_for_machine(nodes, &machine) {
                    Err(fabric_model::secret::KeysError::NotInFile(d)) => Some(d.located(file)),
                    // Found (or refused by the function anyway).
                    _ => None,
                },
            )
            .collect();
        for line in missing.unwrap_or_default() {
            eprintln!("{line}");
        }
    }
    if machine.credentials_secret.is_some() {
        let missing: Option<Vec<String>> = files
            .iter()
            .map(
                |(file, nodes)| match fabric_model::credential::for_machine(nodes, &machine) {
                    Err(fabric_model::credential::CredentialError::NotInFile(d)) => {
                        Some(d.located(file))
                    }
                    _ => None,
                },
            )
            .collect();
        for line in missing.unwrap_or_default() {
            eprintln!("{line}");
        }
    }
}

/// Keys sorted (a Struct keeps no order), with apiVersion, kind, metadata,
/// spec first as in any manifest, so output is stable and diffable.
fn in_manifest_order(doc: Json) -> Json {
    fn sorted(v: Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut entries: Vec<(String, Json)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let Json::Object(mut m) = sorted(doc) else {
        return Json::Null;
    };
    let mut out = serde_json::Map::new();
    for key in ["apiVersion", "kind", "metadata", "spec"] {
        if let Some(v) = m.remove(key) {
            out.insert(key.to_string(), v);
        }
    }
    out.extend(m);
    Json::Object(out)
}

fn resource(doc: &Json) -> Resource {
    Resource {
        resource: doc.as_object().map(json_to_struct),
        ..Default::default()
    }
}

/// Results and status to stderr; the exit status from the results.
fn report(rsp: &RunFunctionResponse, xr_path: &Path) -> ExitCode {
    let refused = exit_status(rsp) == exit::FAILED;
    // The function has no positions; the file does. When the XR's own
    // problems can be located, they replace the Fatal result that states
    // them again: one line per problem.
    let located = if refused {
        located_diagnostics(xr_path)
    } else {
        Vec::new()
    };
    for r in &rsp.results {
        let severity = match Severity::try_from(r.severity) {
            Ok(Severity::Fatal) if !located.is_empty() => continue,
            Ok(Severity::Fatal) => "fatal",
            Ok(Severity::Warning) => "warning",
            _ => "normal",
        };
        eprintln!("{severity}: {}", r.message);
    }
    if refused {
        for line in located {
            eprintln!("{line}");
        }
        return ExitCode::from(exit::FAILED);
    }
    let status = rsp
        .desired
        .as_ref()
        .and_then(|d| d.composite.as_ref())
        .and_then(|c| c.resource.as_ref())
        .map(struct_to_json)
        .and_then(|x| x.get("status").cloned());
    if let Some(status) = status {
        eprintln!("status: {}", in_manifest_order(status));
    }
    for c in &rsp.conditions {
        let st = match ConditionStatus::try_from(c.status) {
            Ok(ConditionStatus::ConditionTrue) => "True",
            Ok(ConditionStatus::ConditionFalse) => "False",
            _ => "Unknown",
        };
        eprintln!(
            "condition: {} {st} {}: {}",
            c.r#type,
            c.reason,
            c.message.as_deref().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}

/// 1 when the function refused (a Fatal result), else 0.
fn exit_status(rsp: &RunFunctionResponse) -> u8 {
    let fatal = rsp
        .results
        .iter()
        .any(|r| r.severity == Severity::Fatal as i32);
    if fatal {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// The XR's validation errors with FILE:LINE:COL, when the file can be
/// read and parsed.
fn located_diagnostics(path: &Path) -> Vec<String> {
    let Ok(docs) = read_yaml(path) else {
        return Vec::new();
    };
    let file = path.display().to_string();
    let mut lines = Vec::new();
    for doc in docs {
        if let Parsed::Invalid(diags) = parse_node(doc, ParseMode::Observed) {
            lines.extend(
                diags
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.located(&file)),
            );
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../example")
            .join(name)
    }

    fn args(observed: &[&str], secret: bool) -> Args {
        Args {
            xr: example("xr.yaml"),
            input: Some(example("composition.yaml")),
            observed: observed.iter().map(|o| example(o)).collect(),
            secret: if secret {
                vec![example("secret.yaml")]
            } else {
                Vec::new()
            },
        }
    }

    fn documents(out: &str) -> Vec<Json> {
        let docs: Vec<Json> = serde_saphyr::from_str_multiple(out).unwrap_or_default();
        docs.into_iter().filter(|d| !d.is_null()).collect()
    }

    #[test]
    fn the_example_composes_in_stages_with_the_secret() {
        let Ok((rsp, out)) = compose(&args(&[], true)) else {
            panic!("example files must read");
        };
        assert!(rsp
            .results
            .iter()
            .all(|r| r.severity != Severity::Fatal as i32));
        let docs = documents(&out);
        let names: Vec<&Json> = docs
            .iter()
            .map(|d| &d["metadata"]["annotations"][RESOURCE_NAME_ANNOTATION])
            .collect();
        assert_eq!(names, ["meta-data", "network-config", "user-data"], "{out}");
        assert!(docs.iter().all(|d| d["kind"] == "EnvironmentFile"), "{out}");

        let Ok((_, out)) = compose(&args(&["observed/snippet-ready.yaml"], true)) else {
            panic!("example files must read");
        };
        let kinds: Vec<Json> = documents(&out).iter().map(|d| d["kind"].clone()).collect();
        assert_eq!(
            kinds,
            vec![
                json!("EnvironmentFile"),
                json!("EnvironmentFile"),
                json!("EnvironmentFile"),
                json!("EnvironmentVM")
            ]
        );
    }

    #[test]
    fn without_the_secret_nothing_is_composed_and_it_is_not_fatal() {
        let Ok((rsp, out)) = compose(&args(&[], false)) else {
            panic!("example files must read");
        };
        assert!(out.is_empty(), "{out}");
        assert!(rsp
            .results
            .iter()
            .any(|r| r.severity == Severity::Warning as i32));
    }

    #[test]
    fn an_invalid_machine_is_fatal_and_exits_1() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let xr = dir.path().join("bad.yaml");
        let text = std::fs::read_to_string(example("xr.yaml"))
            .unwrap_or_default()
            .replace("size: 40", "size: 2");
        std::fs::write(&xr, text).unwrap_or_else(|e| panic!("{e}"));
        let mut a = args(&[], true);
        a.xr = xr;
        let Ok((rsp, out)) = compose(&a) else {
            panic!("the file reads");
        };
        assert!(out.is_empty(), "{out}");
        assert_eq!(exit_status(&rsp), 1);
        let fatal = rsp
            .results
            .iter()
            .find(|r| r.severity == Severity::Fatal as i32);
        assert!(
            fatal.is_some_and(|r| r.message.contains("spec.disk.size: 2 is out of range")),
            "{:?}",
            rsp.results
        );
        let Ok((ok, _)) = compose(&args(&[], true)) else {
            panic!("example files must read");
        };
        assert_eq!(exit_status(&ok), 0);
    }

    #[test]
    fn an_input_file_without_an_input_is_a_file_error() {
        let mut a = args(&[], false);
        a.input = Some(example("secret.yaml"));
        assert!(
            matches!(compose(&a), Err(FileError { code: 2, message: m }) if m.contains("holds no fabric.kubelize.io/v1beta1 Input"))
        );
    }

    #[test]
    fn kinds_take_their_article() {
        assert_eq!(with_article("EnvironmentFile"), "an EnvironmentFile");
        assert_eq!(with_article("Secret"), "a Secret");
    }

    #[test]
    fn a_missing_file_is_a_file_error() {
        let mut a = args(&[], false);
        a.xr = example("does-not-exist.yaml");
        assert!(
            matches!(compose(&a), Err(FileError { code: 2, message: m }) if m.contains("cannot read"))
        );
    }
}

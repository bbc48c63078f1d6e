//! The Fabric composition function: a `Machine` (or legacy `XMachine`) XR
//! becomes the Proxmox managed resources that create its VM.
//!
//! [`run`] is the whole function as a pure call, request in, response out:
//! `fabric function` serves it over gRPC through [`Function`], and
//! `fabric compose` calls it in process, so both take the same code path.
//! It validates the XR with `fabric-model` and renders user-data with
//! `fabric-cloudinit`, exactly as `fabric render` does.
//!
//! The rule users of Crossplane functions break most: desired state left
//! out of a response is deleted. Every response starts from
//! [`response::to`], passes through what other pipeline steps desired, and
//! any failure is a Fatal result, which makes Crossplane apply nothing and
//! delete nothing.
//!
//! # Adding a backend
//!
//! A backend is a module with a `compose(&Plan, &Observed) -> Composed`
//! function: it turns the backend-independent [`plan::Plan`] into desired
//! objects named by stable composition names, and reads readiness and
//! status from what Crossplane observed under those names. Add its variant
//! to [`input::Backend`] and its arm in [`run`]; then run the example check
//! (`example/check.sh`) so `check-composed` validates its objects against
//! the provider's CRDs.

pub mod bpg;
pub mod credential;
pub mod input;
pub mod keys;
pub mod memo;
pub mod observed;
pub mod plan;
pub mod terraform;
pub mod terraform_template;
pub mod xrd;

use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use fabric_model::status::{MachineStatus, Phase};
use fabric_model::{Diagnostic, Machine, Severity};
use function_sdk_rust::proto::v1::function_runner_service_server::FunctionRunnerService;
use function_sdk_rust::proto::v1::{Ready, RunFunctionRequest, RunFunctionResponse};
use function_sdk_rust::resource::{json_to_pb, set_ready, struct_to_json};
use function_sdk_rust::{request, response};
use prometheus_client_sdk::metrics::counter::Counter;
use prometheus_client_sdk::metrics::family::Family;
use prometheus_client_sdk::registry::Registry;
use serde_json::Value as Json;

use crate::input::Backend;
use crate::keys::Keys;
use crate::observed::Observed;
use crate::plan::Plan;

/// How long Crossplane may cache a response.
pub const TTL: Duration = response::DEFAULT_TTL;

/// The largest response Fabric sends. gRPC's default limit is 4 MiB; the
/// margin leaves room for Crossplane's own framing.
pub const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// Condition type: whether the machine's resources are composed and ready.
pub const CONDITION_PROVISIONED: &str = "Provisioned";
/// Condition type: whether the first-boot bootstrap finished, where known.
pub const CONDITION_BOOTSTRAPPED: &str = "Bootstrapped";

/// Why a machine cannot be composed: every problem, each with its field
/// path. Never holds Secret content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub Vec<Diagnostic>);

impl Failure {
    /// One problem at `path`.
    pub fn invalid(path: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure(vec![Diagnostic::error(path, None, message).hint(hint)])
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<String> = self
            .0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        if errors.is_empty() {
            return f.write_str("the machine cannot be composed, and no reason was recorded");
        }
        f.write_str(&errors.join("; "))
    }
}

/// One desired composed resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Composition name (stable across calls).
    pub name: &'static str,
    /// The object, without `metadata.name`: Crossplane names it.
    pub object: Json,
    /// Observed `Ready=True`.
    pub ready: bool,
}

/// What a backend composed.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// Desired resources.
    pub resources: Vec<Desired>,
    /// Where provisioning stands.
    pub phase: Phase,
    /// The VM is observed Ready.
    pub vm_ready: bool,
    /// Proxmox VM id, once known.
    pub vm_id: Option<u32>,
    /// Guest addresses from the guest agent.
    pub ip_addresses: Vec<String>,
    /// Snippet volume id, once known.
    pub user_data_file_id: Option<String>,
    /// One line on where it stands, for the Provisioned condition.
    pub message: String,
}

/// Composition names Fabric owns, across backends.
pub const OWNED: [&str; 5] = [
    bpg::SNIPPET,
    bpg::META_DATA,
    bpg::NETWORK_CONFIG,
    bpg::VM,
    terraform::WORKSPACE,
];

/// Runs the function on one request. Never panics on any input; every
/// failure is a Fatal result naming the field path.
///
/// Validation and rendering are remembered between calls with the same
/// inputs, and the last answer per XR is given again to an equal request
/// ([`memo`]); [`run_uncached`] does all the work every time.
pub fn run(req: &RunFunctionRequest) -> RunFunctionResponse {
    run_with(req, Some(memo::global()))
}

/// [`run`] without the memo: every call validates, renders and composes anew.
pub fn run_uncached(req: &RunFunctionRequest) -> RunFunctionResponse {
    run_with(req, None)
}

fn run_with(req: &RunFunctionRequest, memo: Option<&memo::Memo>) -> RunFunctionResponse {
    let (rsp, fresh) = answer_or_compose(req, memo);
    if let (Some(memo), true) = (memo, fresh) {
        memo.remember_answer(req, &rsp);
    }
    rsp
}

/// The remembered answer to an equal request, or a fresh one; `true` when
/// the caller should remember it (a request with Secret content is never
/// remembered whole, so its response is not copied for nothing).
fn answer_or_compose(
    req: &RunFunctionRequest,
    memo: Option<&memo::Memo>,
) -> (RunFunctionResponse, bool) {
    if let Some(rsp) = memo.and_then(|m| m.answer(req)) {
        tracing::debug!("answered as the last equal request");
        return (rsp, false);
    }
    (answer(req, memo), !memo::carries_secrets(req))
}

fn answer(req: &RunFunctionRequest, memo: Option<&memo::Memo>) -> RunFunctionResponse {
    let mut rsp = response::to(req, TTL);
    if let Err(failure) = compose(req, &mut rsp, memo) {
        // Crossplane applies nothing from a response with a Fatal result, so
        // the resources other steps desired are not dropped either way; but
        // a response that says nothing new is the least surprising one.
        let requirements = rsp.requirements.take();
        rsp = response::to(req, TTL);
        rsp.requirements = requirements;
        response::fatal(&mut rsp, failure.to_string()).reason = Some("ComposeFailed".into());
    }
    rsp
}

/// A Struct as JSON with every object's keys sorted. A Struct's fields are
/// a hash map, iterated in another order each time the same bytes are
/// decoded; unsorted, the problems found in an Input or a Machine would be
/// listed in a different order on every call, and Crossplane would see a
/// new Fatal message each reconcile.
fn struct_to_ordered_json(s: &pbjson_types::Struct) -> Json {
    fn sort(value: &mut Json) {
        match value {
            Json::Object(map) => {
                map.sort_keys();
                map.values_mut().for_each(sort);
            }
            Json::Array(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut json = struct_to_json(s);
    sort(&mut json);
    json
}

fn compose(
    req: &RunFunctionRequest,
    rsp: &mut RunFunctionResponse,
    memo: Option<&memo::Memo>,
) -> Result<(), Failure> {
    let input_json = req.input.as_ref().map(struct_to_ordered_json);
    let input = input::parse(input_json.as_ref()).map_err(Failure)?;
    let xr = request::observed_composite(req)
        .and_then(|r| r.resource.as_ref())
        .map(struct_to_ordered_json)
        .ok_or_else(|| {
            Failure::invalid(
                "observed.composite",
                "the request carries no composite resource",
                "Crossplane sends the Machine being composed; with fabric compose, pass the Machine manifest",
            )
        })?;
    let machine_key = memo::MachineKey::of(&xr);
    let machine = match memo.and_then(|m| m.machine(&machine_key)) {
        Some(machine) => machine,
        None => {
            let machine = Arc::new(Machine::from_json(&xr).map_err(|diags| {
                if diags.iter().any(Diagnostic::is_error) {
                    Failure(diags)
                } else {
                    // The model refused without saying why (seen for
                    // `spec: null`); a Fatal result must still name where
                    // to look.
                    Failure::invalid(
                        "spec",
                        "the Machine was refused without a diagnostic; its spec is probably empty or null",
                        "write the machine's spec: hostname, image, nix.flakeRef, bootstrap keys",
                    )
                }
            })?);
            if let Some(memo) = memo {
                memo.remember_machine(machine_key.clone(), machine.clone());
            }
            machine
        }
    };
    let observed = Observed::from_request(req);
    let prior_phase = xr
        .pointer("/status/phase")
        .and_then(Json::as_str)
        .map(str::to_string);

    // Both Secrets are asked for before either answer is looked at, so that
    // Crossplane fetches them in the same round.
    let keys_state = keys::resolve(req, &machine, &xr, rsp);
    let credential_state = credential::resolve(req, &machine, &xr, rsp);
    let (keys_state, credential_state) = match (keys_state, credential_state) {
        (Ok(k), Ok(c)) => (k, c),
        (Err(a), Err(b)) => return Err(Failure(a.0.into_iter().chain(b.0).collect())),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let mut waiting = Vec::new();
    let mut not_fetched = Vec::new();
    let secret_keys = match keys_state {
        Keys::NotNeeded => None,
        Keys::Known(keys) => Some(keys),
        Keys::Waiting(m) => {
            waiting.push(("spec.bootstrap.sshAuthorizedKeysSecretRef", m));
            None
        }
        Keys::NotFetched(m) => {
            not_fetched.push(("spec.bootstrap.sshAuthorizedKeysSecretRef", m));
            None
        }
    };
    let fleet_credential = match credential_state {
        Keys::NotNeeded => None,
        Keys::Known(c) => Some(c),
        Keys::Waiting(m) => {
            waiting.push((fabric_model::credential::FIELD, m));
            None
        }
        Keys::NotFetched(m) => {
            not_fetched.push((fabric_model::credential::FIELD, m));
            None
        }
    };
    // Crossplane's first call of a reconcile carries no required
    // resources, and it stops the pipeline at once on a Fatal result,
    // before fetching what was asked for: refusing here would fail every
    // reconcile of a machine whose resources exist. Asking is enough;
    // Crossplane calls again with the Secrets.
    if !not_fetched.is_empty() && waiting.is_empty() && observed.any(&OWNED) {
        return Ok(());
    }
    if !waiting.is_empty() || !not_fetched.is_empty() {
        let (fields, messages): (Vec<&str>, Vec<String>) =
            waiting.into_iter().chain(not_fetched).unzip();
        let message = messages.join("; ");
        if observed.any(&OWNED) {
            // Composing nothing would delete the machine's resources.
            return Err(Failure::invalid(
                fields[0],
                format!("{message}; the machine's resources exist, so nothing changes until the Secret can be read"),
                "restore the Secret",
            ));
        }
        let status = MachineStatus {
            phase: Some(Phase::WaitingForKeys),
            node: None,
            instance_id: Some(machine.instance_id()),
            ..MachineStatus::default()
        };
        report(
            rsp,
            &machine,
            &status,
            prior_phase.as_deref(),
            &message,
            false,
        );
        set_ready(response::desired_composite(rsp), Ready::False);
        return Ok(());
    }

    let plan_key = memo::PlanKey {
        input: input_json.clone().unwrap_or(Json::Null),
        secret_keys: secret_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.openssh().to_string()).collect()),
        credential: fleet_credential.clone(),
    };
    let plan = match memo.and_then(|m| m.plan(&machine_key, &plan_key)) {
        Some(plan) => plan,
        None => {
            let secrets = fabric_cloudinit::SecretData {
                ssh_keys: secret_keys.as_deref(),
                credential: fleet_credential.as_ref(),
            };
            let plan = Arc::new(make_plan(&machine, &xr, &input, &secrets)?);
            if let Some(memo) = memo {
                memo.remember_plan(&machine_key, plan_key, plan.clone());
            }
            plan
        }
    };
    let composed = match input.backend {
        Backend::Bpg => bpg::compose(&plan, &observed),
        Backend::Terraform => terraform::compose(&plan, &observed),
    };

    let desired_names: Vec<&'static str> = composed.resources.iter().map(|d| d.name).collect();
    let Composed {
        resources,
        phase,
        vm_ready,
        vm_id,
        ip_addresses,
        user_data_file_id,
        message,
    } = composed;
    for d in resources {
        let Json::Object(object) = d.object else {
            continue;
        };
        let desired = response::desired_composed(rsp, d.name);
        // Fabric owns these names: the object is replaced, not merged, so a
        // field Fabric stopped setting is not kept alive by an old response.
        desired.resource = Some(into_struct(object));
        set_ready(desired, if d.ready { Ready::True } else { Ready::False });
    }
    // A name Fabric owns but no longer composes (the backend changed) goes.
    if let Some(desired) = rsp.desired.as_mut() {
        desired.resources.retain(|name, _| {
            !OWNED.contains(&name.as_str()) || desired_names.contains(&name.as_str())
        });
    }
    let status = MachineStatus {
        phase: Some(phase),
        vm_id,
        node: Some(plan.node.clone()),
        ip_addresses,
        user_data_file_id,
        instance_id: Some(plan.instance_id.clone()),
    };
    report(
        rsp,
        &machine,
        &status,
        prior_phase.as_deref(),
        &message,
        vm_ready,
    );
    if !vm_ready {
        // The XR is Ready when the VM is, not when the snippet alone is.
        set_ready(response::desired_composite(rsp), Ready::False);
    }

    let size = prost::Message::encoded_len(&*rsp);
    if size > MAX_RESPONSE_BYTES {
        return Err(Failure::invalid(
            "spec",
            format!("the composed resources take {size} bytes, more than the {MAX_RESPONSE_BYTES} a response may carry"),
            "shrink the machine's keys or other pipeline steps' resources",
        ));
    }
    tracing::debug!(
        xr = %machine.name,
        backend = input.backend.as_str(),
        phase = phase.as_str(),
        "composed"
    );
    Ok(())
}

/// JSON to a protobuf Struct, moving strings rather than copying them (the
/// snippet carries the whole user-data).
fn into_struct(map: serde_json::Map<String, Json>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, into_pb(v))).collect(),
    }
}

fn into_pb(v: Json) -> pbjson_types::Value {
    use pbjson_types::value::Kind;
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => match n.as_f64() {
            Some(f) => Kind::NumberValue(f),
            None => Kind::NullValue(0),
        },
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.into_iter().map(into_pb).collect(),
        }),
        Json::Object(m) => Kind::StructValue(into_struct(m)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// Renders the cloud-init files and resolves the plan: the expensive part of a call.
fn make_plan(
    machine: &Machine,
    xr: &Json,
    input: &input::InputSpec,
    secrets: &fabric_cloudinit::SecretData<'_>,
) -> Result<Plan, Failure> {
    let opts = fabric_cloudinit::RenderOptions {
        fabric_flake: input
            .bootstrap
            .fabric_flake
            .clone()
            .unwrap_or_else(|| fabric_cloudinit::DEFAULT_FABRIC_FLAKE.to_string()),
    };
    // All three files: Proxmox writes its own meta-data and network-config
    // for any cicustom part left unset, so Fabric's are uploaded too.
    let files = fabric_cloudinit::render_with(machine, secrets, &opts).map_err(|e| {
        let path = match e {
            fabric_cloudinit::RenderError::FabricFlake { .. } => "input.bootstrap.fabricFlake",
            fabric_cloudinit::RenderError::CredentialMissing { .. } => {
                fabric_model::credential::FIELD
            }
            _ => "spec.bootstrap",
        };
        Failure(vec![Diagnostic::error(path, None, e.to_string())])
    })?;
    Plan::new(machine, xr.get("spec"), input, files)
}

/// Writes the XR status and conditions (state, on every call) and results
/// (events, only when the phase changed since the observed status).
fn report(
    rsp: &mut RunFunctionResponse,
    machine: &Machine,
    status: &MachineStatus,
    prior_phase: Option<&str>,
    message: &str,
    vm_ready: bool,
) {
    merge_status(rsp, status);
    let phase = status.phase.unwrap_or(Phase::WaitingForKeys);

    let c = if vm_ready {
        response::condition_true(rsp, CONDITION_PROVISIONED, "Running")
    } else {
        response::condition_false(rsp, CONDITION_PROVISIONED, phase.as_str())
    };
    c.message = Some(message.to_string());
    let c = if vm_ready {
        response::condition_unknown(rsp, CONDITION_BOOTSTRAPPED, "NotObservable")
    } else {
        response::condition_false(rsp, CONDITION_BOOTSTRAPPED, "VMNotRunning")
    };
    c.message = Some(if vm_ready {
        "the VM runs; the first-boot bootstrap reports on the machine itself: run fabric status there".into()
    } else {
        "the VM is not running yet".into()
    });

    if prior_phase == Some(phase.as_str()) {
        return;
    }
    let r = if phase == Phase::WaitingForKeys {
        response::warning(rsp, message.to_string())
    } else {
        response::normal(rsp, format!("{}: {message}", phase.as_str()))
    };
    r.reason = Some(phase.as_str().to_string());
    for w in machine.warnings.iter().filter(|d| !d.is_error()) {
        response::warning(rsp, w.to_string()).reason = Some("MachineWarning".into());
    }
}

/// Adds Fabric's fields to the desired XR status, keeping what earlier
/// pipeline steps wrote there.
fn merge_status(rsp: &mut RunFunctionResponse, status: &MachineStatus) {
    let Ok(Json::Object(ours)) = serde_json::to_value(status) else {
        return;
    };
    let xr = response::desired_composite(rsp);
    let target = xr.resource.get_or_insert_default();
    let mut merged = match target
        .fields
        .get("status")
        .map(function_sdk_rust::resource::pb_to_json)
    {
        Some(Json::Object(existing)) => existing,
        _ => serde_json::Map::new(),
    };
    merged.extend(ours);
    target
        .fields
        .insert("status".into(), json_to_pb(&Json::Object(merged)));
}

/// Fabric's own series at /metrics, beside the SDK's `grpc_server_*`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    runs: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    /// Registers the series in the registry the SDK serves.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fabric_function_runs",
            "RunFunction calls by backend and outcome: the phase reached, or Fatal",
            self.runs.clone(),
        );
    }

    fn count(&self, req: &RunFunctionRequest, rsp: &RunFunctionResponse) {
        let backend = req
            .input
            .as_ref()
            .and_then(|i| i.fields.get("backend"))
            .and_then(|v| match v.kind.as_ref() {
                Some(pbjson_types::value::Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
            .filter(|b| ["bpg", "terraform"].contains(b))
            .unwrap_or(if req.input.is_some() { "bpg" } else { "none" });
        let fatal = rsp
            .results
            .iter()
            .any(|r| r.severity == function_sdk_rust::proto::v1::Severity::Fatal as i32);
        let outcome = if fatal {
            "Fatal".to_string()
        } else {
            rsp.desired
                .as_ref()
                .and_then(|d| d.composite.as_ref())
                .and_then(|c| c.resource.as_ref())
                .and_then(|r| r.fields.get("status"))
                .and_then(|s| match s.kind.as_ref() {
                    Some(pbjson_types::value::Kind::StructValue(s)) => s.fields.get("phase"),
                    _ => None,
                })
                .and_then(|p| match p.kind.as_ref() {
                    Some(pbjson_types::value::Kind::StringValue(p)) => Some(p.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "Unknown".into())
        };
        self.runs
            .get_or_create(&vec![
                ("backend".to_string(), backend.to_string()),
                ("outcome".to_string(), outcome),
            ])
            .inc();
    }
}

/// The composition function as a gRPC service.
#[derive(Debug, Clone, Default)]
pub struct Function {
    metrics: Metrics,
}

impl Function {
    /// A function counting its calls in `metrics`.
    pub fn with_metrics(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

#[tonic::async_trait]
impl FunctionRunnerService for Function {
    async fn run_function(
        &self,
        request: tonic::Request<RunFunctionRequest>,
    ) -> Result<tonic::Response<RunFunctionResponse>, tonic::Status> {
        let req = request.into_inner();
        let memo = memo::global();
        // run never panics on any input (property-tested); this only keeps
        // a bug from costing Crossplane the connection.
        let (rsp, fresh) =
            std::panic::catch_unwind(AssertUnwindSafe(|| answer_or_compose(&req, Some(memo))))
                .unwrap_or_else(|_| {
                    tracing::error!("the function panicked; answering with a Fatal result");
                    let mut rsp = response::to(&req, TTL);
                    response::fatal(&mut rsp, "internal error in function-fabric; see its logs");
                    (rsp, false)
                });
        self.metrics.count(&req, &rsp);
        let fatal = rsp
            .results
            .iter()
            .find(|r| r.severity == function_sdk_rust::proto::v1::Severity::Fatal as i32);
        match fatal {
            Some(r) => tracing::info!(tag = %tag(&req), result = %r.message, "refused"),
            None => tracing::info!(tag = %tag(&req), results = rsp.results.len(), "composed"),
        }
        if fresh {
            // The request is ours: kept, not copied, as run would copy it.
            memo.keep_answer(req, rsp.clone());
        }
        Ok(tonic::Response::new(rsp))
    }
}

fn tag(req: &RunFunctionRequest) -> &str {
    req.meta.as_ref().map_or("", |m| m.tag.as_str())
}

/// The port of the metrics endpoint when `--metrics-address` is not given
/// (the Go SDK's and every Crossplane function's).
pub const METRICS_PORT: u16 = 8080;

/// Where metrics are served when `--metrics-address` is not given: port
/// 8080 on the host the gRPC server listens on, so metrics are never
/// reachable from anywhere the function itself is not. In a pod the
/// function listens on every interface (Crossplane must reach it), and
/// Prometheus scrapes the pod's :8080 there as for any function; a local
/// `--address 127.0.0.1:9443` keeps metrics on 127.0.0.1 as well.
pub fn metrics_address_beside(grpc_address: &str) -> String {
    match grpc_address.parse::<SocketAddr>() {
        Ok(a) => SocketAddr::new(a.ip(), METRICS_PORT).to_string(),
        // A host name (`localhost:9443`): keep the host as written.
        Err(_) => match grpc_address.rsplit_once(':') {
            Some((host, _)) if !host.is_empty() => format!("{host}:{METRICS_PORT}"),
            _ => format!("127.0.0.1:{METRICS_PORT}"),
        },
    }
}

/// Why the function could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The flags cannot work as given: an address that does not parse, no
    /// certificates without `--insecure`, certificates that cannot be read.
    #[error("{0}")]
    Usage(String),
    /// Serving failed: an address in use, or the transport failing.
    #[error("{0}")]
    Failed(String),
}

/// The SDK spells "every interface" as `:8080`, like Go.
fn listen_spelling(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

/// Binds `address` once and lets go, so that an address in use or not
/// ours fails before serving, naming the address, the flag and the cause;
/// the SDK's own errors here are a bare "transport error" (gRPC) or a log
/// line without the address (metrics). The sockets are bound again at once
/// by the SDK; SO_REUSEADDR (std's default on Unix) allows that.
fn check_listen(address: &str, flag: &str) -> Result<(), ServeError> {
    let address = listen_spelling(address);
    match std::net::TcpListener::bind(&address) {
        Ok(_) => Ok(()),
        Err(e) => {
            let advice = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    format!("choose another {flag} or stop the process using it")
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    format!("give {flag} an address of this host, or 0.0.0.0 for every interface")
                }
                std::io::ErrorKind::PermissionDenied => {
                    format!("give {flag} a port above 1023, or run with CAP_NET_BIND_SERVICE")
                }
                _ => format!("check {flag}"),
            };
            let message = format!("cannot listen on {address} ({flag}): {e}; {advice}");
            if matches!(e.kind(), std::io::ErrorKind::InvalidInput) {
                Err(ServeError::Usage(message))
            } else {
                Err(ServeError::Failed(message))
            }
        }
    }
}

/// An error and its causes: tonic's Display alone says "transport error".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Serves [`Function`] with the SDK's runtime: mTLS unless `--insecure`,
/// health and reflection services, metrics at `args.metrics_address` (the
/// caller decides its default, see [`metrics_address_beside`]; empty serves
/// none), graceful shutdown on SIGTERM.
pub async fn serve(args: &function_sdk_rust::Args) -> Result<(), ServeError> {
    let grpc: SocketAddr = args.address.parse().map_err(|e| {
        ServeError::Usage(format!(
            "--address {}: {e} (an IP address and port, e.g. 127.0.0.1:9443 or 0.0.0.0:9443)",
            args.address
        ))
    })?;
    if !args.insecure && args.tls_certs_dir.is_none() {
        return Err(ServeError::Usage(
            function_sdk_rust::Error::MissingTlsCertsDir.to_string(),
        ));
    }
    check_listen(&grpc.to_string(), "--address")?;
    if !args.metrics_address.is_empty() {
        check_listen(&args.metrics_address, "--metrics-address")?;
    }
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    function_sdk_rust::Server::new(Function::with_metrics(metrics), args)
        .metrics_registry(registry)
        .serve()
        .await
        .map_err(|e| match e {
            function_sdk_rust::Error::InvalidAddress(_)
            | function_sdk_rust::Error::MissingTlsCertsDir
            | function_sdk_rust::Error::ReadCertificate { .. } => ServeError::Usage(e.to_string()),
            function_sdk_rust::Error::Transport(_) => {
                ServeError::Failed(format!("cannot serve on {grpc}: {}", with_causes(&e)))
            }
            e => ServeError::Failed(with_causes(&e)),
        })
}

#[cfg(test)]
mod tests {
    use super::metrics_address_beside;

    #[test]
    fn metrics_listen_on_the_host_of_the_grpc_address() {
        for (grpc, metrics) in [
            ("0.0.0.0:9443", "0.0.0.0:8080"),
            ("127.0.0.1:9443", "127.0.0.1:8080"),
            ("10.1.2.3:1", "10.1.2.3:8080"),
            ("[::1]:9443", "[::1]:8080"),
            ("[::]:9443", "[::]:8080"),
            ("localhost:9443", "localhost:8080"),
        ] {
            assert_eq!(metrics_address_beside(grpc), metrics, "--address {grpc}");
        }
    }
}

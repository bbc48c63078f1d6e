//! RunFunction over loopback: Fabric against an echo function built on the
//! same SDK, measured in the same run (the echo is the floor: gRPC, TLS-less
//! HTTP/2 and protobuf with no work).
//!
//!   cargo bench -p fabric-function --bench runfunction [-- --requests N --seconds S --concurrency C]
//!
//! Each server runs in a child process of its own (this binary, started
//! again with `serve-fabric` or `serve-echo`), so its peak RSS (VmHWM) is its
//! own. The parent is the client: sequential calls for latency (p50, p99),
//! then C concurrent callers on one HTTP/2 connection for throughput.
//! Every call sends the same request, as Crossplane does for a machine whose
//! state has not changed: after the first call, `fabric` answers it from its
//! memo (the last answer per XR, given again to an equal request); the
//! memo-off server validates, renders user-data and composes every time.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fabric_function::Function;
use function_sdk_rust::proto::v1::function_runner_service_client::FunctionRunnerServiceClient;
use function_sdk_rust::proto::v1::function_runner_service_server::FunctionRunnerService;
use function_sdk_rust::proto::v1::{
    RequestMeta, Resource, RunFunctionRequest, RunFunctionResponse, State,
};
use function_sdk_rust::resource::json_to_struct;
use function_sdk_rust::{response, Args};
use serde_json::{json, Value as Json};
use tonic::transport::Channel;

struct Echo;

/// Fabric with every call validated, rendered and composed anew (no memo).
struct Uncached;

#[tonic::async_trait]
impl FunctionRunnerService for Uncached {
    async fn run_function(
        &self,
        request: tonic::Request<RunFunctionRequest>,
    ) -> Result<tonic::Response<RunFunctionResponse>, tonic::Status> {
        Ok(tonic::Response::new(fabric_function::run_uncached(
            &request.into_inner(),
        )))
    }
}

/// Answers every call with Fabric's response to the workload, computed
/// once: the cost of Fabric's larger response without Fabric's work.
struct Canned(RunFunctionResponse);

#[tonic::async_trait]
impl FunctionRunnerService for Canned {
    async fn run_function(
        &self,
        _request: tonic::Request<RunFunctionRequest>,
    ) -> Result<tonic::Response<RunFunctionResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.0.clone()))
    }
}

#[tonic::async_trait]
impl FunctionRunnerService for Echo {
    async fn run_function(
        &self,
        request: tonic::Request<RunFunctionRequest>,
    ) -> Result<tonic::Response<RunFunctionResponse>, tonic::Status> {
        let req = request.into_inner();
        let mut rsp = response::to(&req, response::DEFAULT_TTL);
        response::normal(&mut rsp, "echo");
        Ok(tonic::Response::new(rsp))
    }
}

fn server_args(port: u16) -> Args {
    Args {
        debug: false,
        address: format!("127.0.0.1:{port}"),
        tls_certs_dir: None,
        insecure: true,
        max_recv_message_size: None,
        metrics_address: String::new(),
    }
}

fn serve(which: &str, port: u16, stage: Stage) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let args = server_args(port);
    let r = match which {
        "serve-fabric" => rt.block_on(function_sdk_rust::serve(Function::default(), &args)),
        "serve-uncached" => rt.block_on(function_sdk_rust::serve(Uncached, &args)),
        "serve-canned" => rt.block_on(function_sdk_rust::serve(
            Canned(fabric_function::run(&workload(stage))),
            &args,
        )),
        _ => rt.block_on(function_sdk_rust::serve(Echo, &args)),
    };
    r.map_err(|e| e.to_string())
}

fn object(v: &Json) -> Resource {
    Resource {
        resource: v.as_object().map(json_to_struct),
        ..Default::default()
    }
}

/// Which call of a machine's life the benchmark repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The snippet is Ready, the VM is composed for the first time.
    Provisioning,
    /// Steady state, the call Crossplane repeats for as long as the machine
    /// lives: snippet and VM observed Ready, with the provider's status.
    Running,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Provisioning => "provisioning",
            Stage::Running => "running",
        }
    }

    fn parse(s: &str) -> Stage {
        if s == "running" {
            Stage::Running
        } else {
            Stage::Provisioning
        }
    }
}

/// `desired` as the cluster would show it: named, Ready, with `atProvider`.
fn observed_from(desired: &Json, name: &str, at_provider: Json) -> Json {
    let mut o = desired.clone();
    o["metadata"] = json!({"name": name, "namespace": "default", "uid": "0b6f0f4e-aaaa-4bbb-8ccc-000000000002", "generation": 1});
    o["status"] = json!({
        "atProvider": at_provider,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2026-11-27T10:00:00Z"},
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "lastTransitionTime": "2026-11-27T10:00:00Z"},
        ],
    });
    o
}

fn desired_of(rsp: &RunFunctionResponse, name: &str) -> Json {
    rsp.desired
        .as_ref()
        .and_then(|d| d.resources.get(name))
        .and_then(|r| r.resource.as_ref())
        .map(function_sdk_rust::resource::struct_to_json)
        .unwrap_or_default()
}

fn workload(stage: Stage) -> RunFunctionRequest {
    let mut xr = json!({
        "apiVersion": "infra.kubelize.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "web01", "namespace": "default", "uid": "6c1d1d2c-1111-4a4a-9b9b-000000000001"},
        "spec": {
            "hostname": "web01", "domain": "lab.example.org", "class": "small",
            "image": "nixos-template",
            "network": {"ip": "10.0.1.10", "cidr": 24, "gateway": "10.0.1.1", "macAddress": "BC:24:11:5E:00:01"},
            "proxmox": {"node": "pve1", "vlan": 20},
            "nix": {"flakeRef": "git+https://github.com/kubelize/fleet#web01"},
            "bootstrap": {"sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgSMbuBprsvdhMrTvUN6Wb+dCh8clQi5rzAf/8LwMXb alice@laptop"]},
            "tags": {"env": "lab"},
        },
        "status": {"phase": "Provisioning"},
    });
    let input = json!({
        "apiVersion": "fabric.kubelize.io/v1beta1", "kind": "Input",
        "proxmox": {"node": "pve1", "snippetDatastore": "local"},
        "templates": {"nixos-template": {"vmId": 9000}},
    });
    let request = |xr: &Json, observed: Vec<(&str, Json)>| RunFunctionRequest {
        meta: Some(RequestMeta {
            tag: "bench".into(),
            capabilities: vec![],
        }),
        observed: Some(State {
            composite: Some(object(xr)),
            resources: observed
                .into_iter()
                .map(|(n, o)| (n.to_string(), object(&o)))
                .collect(),
        }),
        desired: Some(State::default()),
        input: input.as_object().map(json_to_struct),
        ..Default::default()
    };
    // Every observed object is what Fabric desired plus what the provider
    // adds, as Crossplane would send it.
    let first = fabric_function::run(&request(&xr, vec![]));
    // Every cloud-init snippet the first call composed, uploaded.
    let snippets: Vec<(&str, Json)> = ["meta-data", "network-config", "user-data"]
        .into_iter()
        .filter_map(|name| {
            let d = desired_of(&first, name);
            let file = d
                .pointer("/spec/initProvider/sourceRaw/0/fileName")?
                .as_str()?
                .to_string();
            let at = json!({"id": format!("local:snippets/{file}"), "contentType": "snippets", "datastoreId": "local", "nodeName": "pve1", "fileName": file});
            Some((name, observed_from(&d, &format!("web01-{name}-7x2kq"), at)))
        })
        .collect();
    if stage == Stage::Provisioning {
        return request(&xr, snippets);
    }
    let second = fabric_function::run(&request(&xr, snippets.clone()));
    let vm_desired = desired_of(&second, "vm");
    // Upjet mirrors every parameter in atProvider, plus computed fields.
    let mut at = serde_json::Map::new();
    for part in ["forProvider", "initProvider"] {
        if let Some(Json::Object(m)) = vm_desired.pointer(&format!("/spec/{part}")) {
            at.extend(m.clone());
        }
    }
    for (k, v) in [
        ("id", json!("104")),
        ("vmId", json!(104)),
        ("ipv4Addresses", json!([["127.0.0.1"], ["10.0.1.10"]])),
        (
            "ipv6Addresses",
            json!([["::1"], ["fe80::be24:11ff:fe5e:1"]]),
        ),
        (
            "macAddresses",
            json!(["00:00:00:00:00:00", "BC:24:11:5E:00:01"]),
        ),
        ("networkInterfaceNames", json!(["lo", "ens18"])),
    ] {
        at.insert(k.to_string(), v);
    }
    let vm = observed_from(&vm_desired, "web01-vm-9p3rt", Json::Object(at));
    xr["status"] =
        json!({"phase": "Running", "vmId": 104, "node": "pve1", "ipAddresses": ["10.0.1.10"]});
    let mut observed = snippets;
    observed.push(("vm", vm));
    request(&xr, observed)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
    peak_rss_kib: u64,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn peak_rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn connect(port: u16) -> Result<Channel, String> {
    for _ in 0..200 {
        let endpoint =
            Channel::from_shared(format!("http://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        if let Ok(ch) = endpoint.connect().await {
            return Ok(ch);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("no server on {port}"))
}

/// The servers compared, in table order.
const SERVERS: [(&str, &str); 4] = [
    ("serve-echo", "echo (SDK floor)"),
    ("serve-canned", "Fabric's response, precomputed"),
    ("serve-fabric", "fabric"),
    (
        "serve-uncached",
        "fabric, memo off (every call validates, renders and composes)",
    ),
];

/// Starts every server, then measures latency in interleaved rounds (the
/// machine's load drifts; interleaving spreads it over all servers alike),
/// then throughput server by server, then each server's peak RSS.
async fn measure_all(
    stage: Stage,
    requests: usize,
    seconds: f64,
    concurrency: usize,
) -> Result<Vec<Figures>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for (which, _) in SERVERS {
        let port = free_port()?;
        let child = Command::new(&exe)
            .args([which, &port.to_string(), stage.name()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        children.push(child);
        ports.push(port);
    }
    let result = drive_all(&ports, stage, requests, seconds, concurrency).await;
    let peaks: Vec<u64> = children.iter().map(peak_rss_kib).collect();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let timings = result?;
    Ok(timings
        .into_iter()
        .zip(peaks)
        .map(|((p50, p99, per_second), peak_rss_kib)| Figures {
            p50,
            p99,
            per_second,
            peak_rss_kib,
        })
        .collect())
}

async fn drive_all(
    ports: &[u16],
    stage: Stage,
    requests: usize,
    seconds: f64,
    concurrency: usize,
) -> Result<Vec<(Duration, Duration, f64)>, String> {
    let req = workload(stage);
    let mut channels = Vec::new();
    for port in ports {
        let channel = connect(*port).await?;
        let mut client = FunctionRunnerServiceClient::new(channel.clone());
        // Warm up, and check the answer is a real one.
        for _ in 0..200 {
            let rsp = client
                .run_function(req.clone())
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if rsp.results.iter().any(|r| r.severity == 1) {
                return Err(format!("fatal result: {:?}", rsp.results));
            }
        }
        channels.push(channel);
    }
    const ROUNDS: usize = 20;
    let per_round = (requests / ROUNDS).max(1);
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::with_capacity(requests); ports.len()];
    for round in 0..ROUNDS {
        for k in 0..ports.len() {
            let i = (k + round) % ports.len();
            let mut client = FunctionRunnerServiceClient::new(channels[i].clone());
            for _ in 0..per_round {
                let start = Instant::now();
                client
                    .run_function(req.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                latencies[i].push(start.elapsed());
            }
        }
    }
    let mut out = Vec::new();
    for (i, lat) in latencies.iter_mut().enumerate() {
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
        let (p50, p99) = (pct(0.50), pct(0.99));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let mut c = FunctionRunnerServiceClient::new(channels[i].clone());
            let r = req.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if c.run_function(r.clone()).await.is_ok() {
                        n += 1;
                    }
                }
                n
            }));
        }
        let started = Instant::now();
        let mut total = 0u64;
        for t in tasks {
            total += t.await.map_err(|e| e.to_string())?;
        }
        out.push((p50, p99, total as f64 / started.elapsed().as_secs_f64()));
    }
    Ok(out)
}

/// Time of each step of `run`, for finding where the time goes.
fn breakdown(req: &RunFunctionRequest, n: usize) {
    use function_sdk_rust::resource::struct_to_json;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "  {name}: {:.1} µs",
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    };
    let xr_struct = req
        .observed
        .as_ref()
        .and_then(|o| o.composite.as_ref())
        .and_then(|c| c.resource.clone())
        .unwrap_or_default();
    let xr = struct_to_json(&xr_struct);
    let input = req.input.as_ref().map(struct_to_json);
    let rsp_req = req.clone();
    time("XR Struct to JSON", &mut || {
        std::hint::black_box(struct_to_json(&xr_struct));
    });
    time("input::parse", &mut || {
        std::hint::black_box(fabric_function::input::parse(input.as_ref()).is_ok());
    });
    time("Machine::from_json", &mut || {
        std::hint::black_box(fabric_model::Machine::from_json(&xr).is_ok());
    });
    let Ok(machine) = fabric_model::Machine::from_json(&xr) else {
        return;
    };
    time("render_user_data", &mut || {
        std::hint::black_box(
            fabric_cloudinit::render_user_data(
                &machine,
                None,
                &fabric_cloudinit::RenderOptions::default(),
            )
            .is_ok(),
        );
    });
    time("response::to (clone of the request state)", &mut || {
        std::hint::black_box(response::to(req, response::DEFAULT_TTL));
    });
    let rsp = fabric_function::run(req);
    time(
        "clone of the response (the precomputed server pays it too)",
        &mut || {
            std::hint::black_box(rsp.clone());
        },
    );
    time("request compared with an equal one", &mut || {
        std::hint::black_box(*req == rsp_req);
    });
    let function = Function::default();
    let rt = tokio::runtime::Builder::new_current_thread().build();
    if let Ok(rt) = rt {
        time("Function::run_function (run, metrics, logs)", &mut || {
            std::hint::black_box(
                rt.block_on(function.run_function(tonic::Request::new(req.clone())))
                    .is_ok(),
            );
        });
        time("clone of the request (the line above pays it)", &mut || {
            std::hint::black_box(req.clone());
        });
    }
    time("encoded_len of the response", &mut || {
        std::hint::black_box(prost::Message::encoded_len(&rsp));
    });
    let rsp_bytes = prost::Message::encode_to_vec(&rsp);
    let req_bytes = prost::Message::encode_to_vec(req);
    println!(
        "  request {} bytes, response {} bytes",
        req_bytes.len(),
        rsp_bytes.len()
    );
    time(
        "encode + decode of the request (both functions pay it)",
        &mut || {
            let b = prost::Message::encode_to_vec(req);
            std::hint::black_box(
                <RunFunctionRequest as prost::Message>::decode(b.as_slice()).is_ok(),
            );
        },
    );
    time("encode + decode of Fabric's response", &mut || {
        let b = prost::Message::encode_to_vec(&rsp);
        std::hint::black_box(<RunFunctionResponse as prost::Message>::decode(b.as_slice()).is_ok());
    });
}

fn flag(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(which) = args.get(1).filter(|a| a.starts_with("serve-")) {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
        let stage = Stage::parse(args.get(3).map_or("", String::as_str));
        if let Err(e) = serve(which, port, stage) {
            eprintln!("{which}: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("in-process") {
        // The function alone, without gRPC: where the time goes when profiled.
        let n = flag(&args, "--requests", 20000.0) as usize;
        let stage = Stage::parse(args.get(2).map_or("", String::as_str));
        let req = workload(stage);
        let start = Instant::now();
        let mut composed = 0;
        for _ in 0..n {
            composed += fabric_function::run(&req)
                .desired
                .map_or(0, |d| d.resources.len());
        }
        let per_call = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("fabric_function::run in process: {per_call:.1} µs per call ({composed} resources composed)");
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(fabric_function::run_uncached(&req));
        }
        println!(
            "fabric_function::run_uncached in process: {:.1} µs per call",
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        breakdown(&req, n);
        return;
    }
    let requests = flag(&args, "--requests", 5000.0) as usize;
    let seconds = flag(&args, "--seconds", 5.0);
    let concurrency = flag(&args, "--concurrency", 16.0) as usize;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "RunFunction over loopback: {requests} sequential calls, then {concurrency} concurrent callers for {seconds} s"
    );
    for stage in [Stage::Running, Stage::Provisioning] {
        let figures = match rt.block_on(measure_all(stage, requests, seconds, concurrency)) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("benchmark failed: {e}");
                std::process::exit(1);
            }
        };
        let req = workload(stage);
        println!();
        println!(
            "Workload: {} (request {} bytes)",
            stage.name(),
            prost::Message::encoded_len(&req)
        );
        println!();
        println!("| server | p50 (µs) | p99 (µs) | throughput (calls/s) | peak RSS (MiB) |");
        println!("|---|---:|---:|---:|---:|");
        for ((_, name), f) in SERVERS.iter().zip(&figures) {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {:.1} |",
                us(f.p50),
                us(f.p99),
                f.per_second,
                f.peak_rss_kib as f64 / 1024.0
            );
        }
        let (echo, canned, fabric, uncached) = (&figures[0], &figures[1], &figures[2], &figures[3]);
        println!();
        println!(
            "{}: fabric p50 / echo p50 = {:.2} (target <= 1.30; memo off {:.2}; the response alone {:.2}); throughput ratio {:.2}; fabric peak RSS {:.1} MiB (target < 20)",
            stage.name(),
            us(fabric.p50) / us(echo.p50),
            us(uncached.p50) / us(echo.p50),
            us(canned.p50) / us(echo.p50),
            fabric.per_second / echo.per_second,
            fabric.peak_rss_kib as f64 / 1024.0
        );
    }
}

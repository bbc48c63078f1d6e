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
//! Every call sends the same request: a Machine whose snippet is Ready, so
//! Fabric validates, renders user-data and composes both resources.

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

fn serve(which: &str, port: u16) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let args = server_args(port);
    let r = match which {
        "serve-fabric" => rt.block_on(function_sdk_rust::serve(Function, &args)),
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

fn workload() -> RunFunctionRequest {
    let xr = json!({
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
        "templates": {"nixos-template": 9000},
    });
    let snippet = json!({
        "apiVersion": "virtualenvironmentfile.proxmoxbpg.m.crossplane.io/v1alpha1",
        "kind": "EnvironmentFile",
        "metadata": {"name": "web01-user-data-7x2kq", "namespace": "default"},
        "spec": {"forProvider": {"contentType": "snippets", "datastoreId": "local", "nodeName": "pve1"}},
        "status": {
            "atProvider": {"id": "local:snippets/fabric-web01.user-data.yaml"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": "2026-11-27T10:00:00Z"}],
        },
    });
    RunFunctionRequest {
        meta: Some(RequestMeta {
            tag: "bench".into(),
            capabilities: vec![],
        }),
        observed: Some(State {
            composite: Some(object(&xr)),
            resources: [("user-data".to_string(), object(&snippet))]
                .into_iter()
                .collect(),
        }),
        desired: Some(State::default()),
        input: input.as_object().map(json_to_struct),
        ..Default::default()
    }
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

async fn measure(
    which: &str,
    requests: usize,
    seconds: f64,
    concurrency: usize,
) -> Result<Figures, String> {
    let port = free_port()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([which, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = drive(port, requests, seconds, concurrency).await;
    let peak = peak_rss_kib(&child);
    let _ = child.kill();
    let _ = child.wait();
    let (p50, p99, per_second) = result?;
    Ok(Figures {
        p50,
        p99,
        per_second,
        peak_rss_kib: peak,
    })
}

async fn drive(
    port: u16,
    requests: usize,
    seconds: f64,
    concurrency: usize,
) -> Result<(Duration, Duration, f64), String> {
    let channel = connect(port).await?;
    let req = workload();
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
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        client
            .run_function(req.clone())
            .await
            .map_err(|e| e.to_string())?;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];

    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = FunctionRunnerServiceClient::new(channel.clone());
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
    let per_second = total as f64 / started.elapsed().as_secs_f64();
    Ok((pct(0.50), pct(0.99), per_second))
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
        if let Err(e) = serve(which, port) {
            eprintln!("{which}: {e}");
            std::process::exit(1);
        }
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
    let run = |which: &str| rt.block_on(measure(which, requests, seconds, concurrency));
    let (echo, fabric) = match (run("serve-echo"), run("serve-fabric")) {
        (Ok(e), Ok(f)) => (e, f),
        (e, f) => {
            eprintln!("benchmark failed: echo {:?} fabric {:?}", e.err(), f.err());
            std::process::exit(1);
        }
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("RunFunction over loopback: {requests} sequential calls, then {concurrency} concurrent callers for {seconds} s");
    println!("| function | p50 (µs) | p99 (µs) | throughput (calls/s) | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, f) in [("echo (SDK floor)", &echo), ("fabric", &fabric)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.1} |",
            us(f.p50),
            us(f.p99),
            f.per_second,
            f.peak_rss_kib as f64 / 1024.0
        );
    }
    let ratio = us(fabric.p50) / us(echo.p50);
    println!();
    println!("fabric p50 / echo p50 = {ratio:.2} (target <= 1.30)");
    println!(
        "fabric throughput / echo throughput = {:.2}",
        fabric.per_second / echo.per_second
    );
    println!(
        "fabric peak RSS = {:.1} MiB (target < 20 MiB)",
        fabric.peak_rss_kib as f64 / 1024.0
    );
}

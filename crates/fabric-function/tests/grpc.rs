//! The real server over loopback, driven by the SDK's tonic client:
//! insecure and mTLS (certificates generated per test with rcgen), the
//! health and reflection services, and shutdown on SIGTERM.

use std::path::Path;
use std::time::Duration;

use fabric_function::bpg;
use function_sdk_rust::proto::v1::function_runner_service_client::FunctionRunnerServiceClient;
use function_sdk_rust::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::*;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn args(port: u16, tls: Option<&Path>) -> Args {
    Args {
        debug: false,
        address: format!("127.0.0.1:{port}"),
        tls_certs_dir: tls.map(Path::to_path_buf),
        insecure: tls.is_none(),
        max_recv_message_size: None,
        metrics_address: String::new(),
    }
}

fn spawn_server(args: Args) {
    tokio::spawn(async move {
        if let Err(e) = fabric_function::serve(&args).await {
            eprintln!("server stopped: {e}");
        }
    });
}

async fn insecure_channel(port: u16) -> Channel {
    for _ in 0..100 {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
        {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the function never listened on {port}");
}

#[tokio::test]
async fn insecure_server_composes_over_grpc_and_serves_health_and_reflection() {
    let port = free_port();
    let metrics_port = free_port();
    let mut a = args(port, None);
    a.metrics_address = format!("127.0.0.1:{metrics_port}");
    spawn_server(a);
    let channel = insecure_channel(port).await;
    let mut client = FunctionRunnerServiceClient::new(channel.clone());

    let rsp = client
        .run_function(request(&machine(), Some(&input("bpg")), &[]))
        .await
        .unwrap_or_else(|e| panic!("RunFunction: {e}"))
        .into_inner();
    assert_eq!(rsp.meta.as_ref().map(|m| m.tag.as_str()), Some("test"));
    assert_eq!(
        names(&rsp),
        vec![bpg::META_DATA, bpg::NETWORK_CONFIG, bpg::SNIPPET]
    );
    assert_eq!(xr_status(&rsp)["phase"], "WaitingForSnippet");

    // An invalid machine over the wire: Fatal, nothing composed.
    let mut bad = machine();
    bad["spec"]["memory"]["size"] = serde_json::json!(12);
    let rsp = client
        .run_function(request(&bad, Some(&input("bpg")), &[]))
        .await
        .unwrap_or_else(|e| panic!("RunFunction: {e}"))
        .into_inner();
    assert!(fatal(&rsp)
        .unwrap_or_default()
        .contains("spec.memory.size: 12 is out of range"));
    assert!(names(&rsp).is_empty());

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "apiextensions.fn.proto.v1.FunctionRunnerService".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health: {e}"))
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream_once(ask))
        .await
        .unwrap_or_else(|e| panic!("reflection: {e}"))
        .into_inner();
    let first = stream
        .message()
        .await
        .unwrap_or_else(|e| panic!("reflection: {e}"))
        .and_then(|m| m.message_response);
    let Some(MessageResponse::ListServicesResponse(list)) = first else {
        panic!("no service list: {first:?}");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        services
            .iter()
            .any(|s| s == "apiextensions.fn.proto.v1.FunctionRunnerService"),
        "{services:?}"
    );

    // Fabric's own series beside the SDK's gRPC ones.
    let text = scrape(metrics_port).await;
    assert!(
        text.contains(r#"fabric_function_runs_total{backend="bpg",outcome="WaitingForSnippet"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"fabric_function_runs_total{backend="bpg",outcome="Fatal"} 1"#),
        "{text}"
    );
    assert!(text.contains("grpc_server_started_total"), "{text}");
}

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..100 {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let ask = conn
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            if ask.is_ok() {
                let mut out = Vec::new();
                let _ = conn.read_to_end(&mut out).await;
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no metrics endpoint on {port}");
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter(vec![item])
}

/// A CA, a server certificate for localhost and a client certificate, both
/// signed by the CA; and a second CA's client certificate.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca_pem: String,
    pub(crate) client: (String, String),
    pub(crate) stranger: (String, String),
}

pub(crate) fn pki() -> Result<Pki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), Issuer::new(params, key)))
    };
    let leaf = |issuer: &Issuer<'static, KeyPair>,
                san: &str,
                usage|
     -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![san.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, san);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (ca_pem, issuer) = ca("fabric test CA")?;
    let (_, other_issuer) = ca("some other CA")?;
    let server = leaf(&issuer, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client = leaf(&issuer, "crossplane", ExtendedKeyUsagePurpose::ClientAuth)?;
    let stranger = leaf(
        &other_issuer,
        "crossplane",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let dir = tempfile::tempdir().map_err(|e| rcgen::Error::PemError(e.to_string()))?;
    for (name, text) in [
        ("tls.crt", &server.0),
        ("tls.key", &server.1),
        ("ca.crt", &ca_pem),
    ] {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| rcgen::Error::PemError(e.to_string()))?;
    }
    Ok(Pki {
        dir,
        ca_pem,
        client,
        stranger,
    })
}

pub(crate) async fn tls_call(
    port: u16,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<usize, String> {
    let mut tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = FunctionRunnerServiceClient::new(channel);
    let rsp = client
        .run_function(request(&machine(), Some(&input("terraform")), &[]))
        .await
        .map_err(|e| format!("call: {e:?}"))?
        .into_inner();
    Ok(names(&rsp).len())
}

#[tokio::test]
async fn mtls_server_answers_a_client_with_a_certificate_and_refuses_others() {
    let pki = pki().unwrap_or_else(|e| panic!("certificates: {e}"));
    let port = free_port();
    spawn_server(args(port, Some(pki.dir.path())));

    let mut answered = Err(String::new());
    for _ in 0..100 {
        answered = tls_call(port, &pki.ca_pem, Some(&pki.client)).await;
        if answered.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answered,
        Ok(1),
        "a client with the CA's certificate is served"
    );

    let anonymous = tls_call(port, &pki.ca_pem, None).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate is refused: {anonymous:?}"
    );
    let stranger = tls_call(port, &pki.ca_pem, Some(&pki.stranger)).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA is refused: {stranger:?}"
    );
}

#[tokio::test]
async fn without_certificates_or_insecure_the_server_refuses_to_start() {
    let mut a = args(free_port(), None);
    a.insecure = false;
    let err = fabric_function::serve(&a)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("--insecure"), "{err}");
}

const CHILD_PORT: &str = "FABRIC_FUNCTION_TEST_CHILD_PORT";

/// Not a test on its own: the server process `sigterm_stops_the_server_cleanly`
/// runs (this test binary started again with the port in the environment).
#[test]
fn sigterm_child_server() {
    let Ok(port) = std::env::var(CHILD_PORT) else {
        return;
    };
    let port: u16 = port.parse().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let result = runtime.block_on(fabric_function::serve(&args(port, None)));
    assert!(result.is_ok(), "{result:?}");
    println!("FABRIC_CHILD_STOPPED_CLEANLY");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let port = free_port();
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let child = std::process::Command::new(exe)
        .args([
            "--exact",
            "grpc::sigterm_child_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PORT, port.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let channel = insecure_channel(port).await;
    let rsp = FunctionRunnerServiceClient::new(channel)
        .run_function(request(&machine(), Some(&input("bpg")), &[]))
        .await;
    assert!(rsp.is_ok(), "{rsp:?}");

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stdout}", out.status);
    assert!(stdout.contains("FABRIC_CHILD_STOPPED_CLEANLY"), "{stdout}");
}

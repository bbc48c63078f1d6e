//! The runtime image embedded in the function package. `xptest/run`
//! builds the `.xpkg`, unpacks it with umoci and points these tests at the
//! result (`FABRIC_IMAGE_BUNDLE`: an OCI runtime bundle, `rootfs/` and
//! `config.json`; `FABRIC_IMAGE_CONFIG`: the image's OCI config). Without
//! them they only say they were skipped: there is no image to test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use crate::grpc::{free_port, pki, tls_call};
use crate::support::workspace;

fn env_path(name: &str) -> Option<PathBuf> {
    let p = std::env::var_os(name).map(PathBuf::from);
    if p.is_none() {
        eprintln!("skipped: {name} is not set (xptest/run builds the package and sets it)");
    }
    p
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a Dockerfile's final stage declares: ENTRYPOINT (exec form), USER,
/// EXPOSE.
#[derive(Debug, Default, PartialEq)]
struct Declared {
    entrypoint: Vec<String>,
    user: String,
    ports: Vec<String>,
}

fn dockerfile_declares(text: &str) -> Declared {
    let mut d = Declared::default();
    for line in text.lines().map(str::trim) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match word.to_ascii_uppercase().as_str() {
            // Each stage starts afresh: only the last one is the image.
            "FROM" => d = Declared::default(),
            "ENTRYPOINT" => {
                d.entrypoint = serde_json::from_str(rest.trim())
                    .unwrap_or_else(|e| panic!("ENTRYPOINT is not exec form ({e}): {rest}"))
            }
            "USER" => d.user = rest.trim().to_string(),
            "EXPOSE" => d.ports.extend(rest.split_whitespace().map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            })),
            _ => {}
        }
    }
    d
}

#[test]
fn image_dockerfile_parser_reads_the_last_stage() {
    let d = dockerfile_declares(
        "FROM a AS build\nUSER 1\nEXPOSE 1\nFROM b\nUSER 65532:65532\nEXPOSE 9443\nENTRYPOINT [\"/f\", \"function\"]\n",
    );
    assert_eq!(
        d,
        Declared {
            entrypoint: vec!["/f".into(), "function".into()],
            user: "65532:65532".into(),
            ports: vec!["9443/tcp".into()],
        }
    );
}

#[test]
fn image_and_dockerfile_agree_on_entrypoint_user_and_port() {
    let Some(config) = env_path("FABRIC_IMAGE_CONFIG") else {
        return;
    };
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile"))
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    let want = dockerfile_declares(&dockerfile);
    assert_eq!(
        want.entrypoint,
        ["/usr/local/bin/fabric", "function"],
        "the Dockerfile's entrypoint"
    );
    assert_eq!(want.user, "65532:65532", "the Dockerfile's user");
    assert_eq!(want.ports, ["9443/tcp"], "the Dockerfile's port");
    let c = &read_json(&config)["config"];
    let got = Declared {
        entrypoint: c["Entrypoint"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        user: c["User"].as_str().unwrap_or_default().to_string(),
        ports: c["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    };
    assert_eq!(got, want, "the image's config ({})", config.display());
    assert!(
        c["Cmd"].as_array().is_none_or(Vec::is_empty),
        "no Cmd: Crossplane's args follow the entrypoint: {c}"
    );
}

/// Kills the function started from the image when the test ends, however.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the bundle's process (its args, env and working directory) with
/// chroot as `uid`, the certificates in TLS_SERVER_CERTS_DIR, and calls
/// RunFunction over mTLS. chroot keeps the host's network, so the test
/// reaches the function on loopback; running as a uid other than root
/// proves every file the function needs is readable by it.
async fn serves_over_mtls_as(bundle: &Path, uid: u32) {
    let spec = read_json(&bundle.join("config.json"));
    let rootfs = bundle.join(spec["root"]["path"].as_str().unwrap_or("rootfs"));
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(!args.is_empty(), "the image has no entrypoint");

    let pki = pki().unwrap_or_else(|e| panic!("certificates: {e}"));
    // Inside the root: what Crossplane mounts into the pod.
    let certs = format!("/tmp/fabric-image-test-{}-{uid}", std::process::id());
    let host_certs = rootfs.join(certs.trim_start_matches('/'));
    std::fs::create_dir_all(&host_certs).unwrap_or_else(|e| panic!("{e}"));
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(pki.dir.path().join(name), host_certs.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    chown_tree(&host_certs, uid);

    let port = free_port();
    let mut cmd = Command::new("chroot");
    cmd.arg(format!("--userspec={uid}:{uid}"))
        .arg(&rootfs)
        .args(&args)
        .arg(format!("--address=127.0.0.1:{port}"))
        .arg("--metrics-address=")
        .env_clear()
        .stdin(Stdio::null());
    for kv in spec["process"]["env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = kv.as_str().and_then(|s| s.split_once('=')) {
            cmd.env(k, v);
        }
    }
    cmd.env("TLS_SERVER_CERTS_DIR", &certs);
    let child = Running(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("chroot {}: {e}", rootfs.display())),
    );

    let mut answered = Err(String::new());
    for _ in 0..200 {
        answered = tls_call(port, &pki.ca_pem, Some(&pki.client)).await;
        if answered.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&host_certs);
    assert_eq!(
        answered,
        Ok(1),
        "the image's function, as uid {uid}, serves RunFunction over mTLS"
    );
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(real_uid, uid.to_string(), "the function ran as uid {uid}");
    let stranger = tls_call(port, &pki.ca_pem, Some(&pki.stranger)).await;
    assert!(stranger.is_err(), "another CA's client is refused");
}

fn chown_tree(dir: &Path, uid: u32) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {}", dir.display());
}

#[tokio::test]
async fn image_serves_runfunction_over_mtls_as_its_user_and_as_crossplanes() {
    let Some(bundle) = env_path("FABRIC_IMAGE_BUNDLE") else {
        return;
    };
    let spec = read_json(&bundle.join("config.json"));
    let image_uid = spec["process"]["user"]["uid"].as_u64().unwrap_or(0);
    assert_eq!(image_uid, 65532, "the image runs as 65532");
    // Crossplane's runtime may run function pods as another uid (2000):
    // nothing in the image may be readable by 65532 alone.
    for uid in [65532, 2000] {
        serves_over_mtls_as(&bundle, uid).await;
    }
}

//! Every cell of the README's exit-code table, from the built `fabric`
//! binary: each command is run on real files, a real occupied port, real
//! Nix and real local Git flakes, and its status and message are checked.
//!
//! Bootstrap and the agent run under `--root` with the converge tests'
//! fixtures (`crates/fabric-converge/tests/common`): real Nix and Git, and
//! FAKE `systemctl` / `systemd-run` stubs on PATH, because systemd is not
//! PID 1 here. Under `--root` activation runs directly, so the stubs only
//! record calls.

#[path = "../../fabric-converge/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Fixture, Gen, NIX_CONFIG};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fabric() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fabric"));
    c.current_dir(repo());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs fabric with `args` and checks its exit status; returns the output.
fn expect(code: i32, args: &[&str]) -> Output {
    expect_cmd(code, fabric().args(args))
}

fn expect_cmd(code: i32, cmd: &mut Command) -> Output {
    let out = cmd.output().expect("fabric runs");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn has(out: &Output, needle: &str) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn dns01() -> String {
    std::fs::read_to_string(repo().join("examples/machines/dns01.yaml")).unwrap()
}

const MACHINE_WITH_SECRET: &str = "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata: {name: web, namespace: apps}\nspec:\n  hostname: web\n  class: small\n  image: nixos-template\n  nix: {flakeRef: 'github:org/fleet#web'}\n  bootstrap:\n    sshAuthorizedKeysSecretRef: {name: admin-keys}\n";

/// Files that cannot be manifests at all, and one that is wrong inside.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        w("binary.yaml", b"\x7fELF\x02\x01\x01\x00\x00\x00");
        w("latin1.yaml", b"apiVersion: v1\nkind: Machine # caf\xe9\n");
        w(
            "secret.yaml",
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
        );
        w(
            "broken.yaml",
            b"apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nspec: [\n",
        );
        w(
            "gateway.yaml",
            dns01()
                .replace("gateway: 10.0.1.1", "gateway: 10.0.2.1")
                .as_bytes(),
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn validate() {
    // 0: every bundled example, as one fleet (the private-fleet ones among them).
    let out = expect(0, &["validate", "examples", "example"]);
    has(&out, "8 machines checked");
    has(&out, "all valid");
    let f = Inputs::new();

    // 1: found wrong.
    let out = expect(1, &["validate", p(&f.path("gateway.yaml"))]);
    has(
        &out,
        "spec.network.gateway: 10.0.2.1 is outside 10.0.1.0/24",
    );
    // 2: not YAML at all, like any input that cannot be used.
    let out = expect(2, &["validate", p(&f.path("broken.yaml"))]);
    has(&out, "broken.yaml:3:7: invalid YAML: unclosed bracket");
    let twin = f.path("twin.yaml");
    std::fs::write(
        &twin,
        dns01().replace("name: dns01\n  namespace", "name: twin\n  namespace"),
    )
    .unwrap();
    let out = expect(1, &["validate", "examples/machines", p(&twin)]);
    has(
        &out,
        "hostname dns01 (FQDN dns01.homelab.local) is also used by",
    );

    // 2: cannot be used at all.
    let out = expect(2, &["validate", "does/not/exist"]);
    has(
        &out,
        "does/not/exist: cannot read: No such file or directory",
    );
    let out = expect(2, &["validate", p(&f.path("binary.yaml"))]);
    has(
        &out,
        "binary.yaml:1:8: a NUL byte at byte offset 7: this is a binary file",
    );
    let out = expect(2, &["validate", p(&f.path("latin1.yaml"))]);
    has(
        &out,
        "latin1.yaml:2:20: not UTF-8 text: byte 0xe9 at byte offset 34 (save the manifest as UTF-8)",
    );
    // Larger than any manifest: refused by its size, before it is read.
    let big = f.path("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = expect(2, &["validate", p(&big)]);
    has(&out, "big.yaml: the file is 64 MiB");
    let out = expect(2, &["validate", p(&f.path("secret.yaml"))]);
    has(&out, "secret.yaml: no Machine manifest in this file (a Machine has apiVersion: infra.kubelize.io/v1alpha1 and kind: Machine; pass --allow-empty when none is fine)");
    let empty = tempfile::tempdir().unwrap();
    let out = expect(2, &["validate", p(empty.path())]);
    has(
        &out,
        &format!(
            "{}: no Machine manifest in this directory (0 *.yaml/*.yml files searched)",
            empty.path().display()
        ),
    );
    let others = tempfile::tempdir().unwrap();
    std::fs::copy(f.path("secret.yaml"), others.path().join("s.yaml")).unwrap();
    std::fs::write(others.path().join("notes.txt"), dns01()).unwrap();
    let out = expect(2, &["validate", p(others.path())]);
    has(
        &out,
        "no Machine manifest in this directory (1 *.yaml/*.yml file searched)",
    );
    // A good path beside the empty one does not hide it.
    expect(2, &["validate", "examples/machines", p(empty.path())]);
    // A dangling link among good manifests, and an invalid machine: both
    // are reported, and the run exits 2.
    let mixed = tempfile::tempdir().unwrap();
    std::fs::copy(f.path("gateway.yaml"), mixed.path().join("a.yaml")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", mixed.path().join("gone.yaml")).unwrap();
    let out = expect(2, &["validate", p(mixed.path())]);
    has(&out, "gone.yaml: cannot read: No such file or directory");
    has(&out, "spec.network.gateway");
    // --allow-empty: an empty set is fine.
    expect(0, &["validate", "--allow-empty", p(empty.path())]);
    expect(
        0,
        &[
            "validate",
            "--allow-empty",
            p(others.path()),
            "examples/machines",
        ],
    );
    let out = expect(2, &["validate", "--output", "json", p(empty.path())]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["unusable"], true);
    // Usage.
    expect(2, &["validate"]);
    expect(2, &["validate", "--frobnicate", "examples"]);
}

#[test]
fn render_and_seed() {
    let f = Inputs::new();
    let out = expect(0, &["render", "examples/machines/dns01.yaml"]);
    assert!(text(&out.stdout).starts_with("#cloud-config"));
    let seed_dir = f.path("seed");
    expect(
        0,
        &[
            "render",
            "examples/machines/dns01.yaml",
            "--dir",
            p(&seed_dir),
        ],
    );
    let iso = f.path("dns01.iso");
    expect(
        0,
        &["seed", "examples/machines/dns01.yaml", "--iso", p(&iso)],
    );

    let machine = f.path("web.yaml");
    std::fs::write(&machine, MACHINE_WITH_SECRET).unwrap();
    let bad_secret = f.path("keys.yaml");
    std::fs::write(
        &bad_secret,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: admin-keys}\nstringData:\n  authorized_keys: not a key\n",
    )
    .unwrap();
    for cmd in ["render", "seed"] {
        let with_output = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            if cmd == "seed" {
                v.extend(["--iso".into(), p(&f.path("out.iso")).into()]);
            }
            v.insert(0, cmd.into());
            v
        };
        let run = |code: i32, args: &[&str]| {
            let v = with_output(args);
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            expect(code, &v)
        };
        // 1: read, and wrong.
        has(
            &run(1, &[p(&f.path("gateway.yaml"))]),
            "spec.network.gateway",
        );
        has(&run(2, &[p(&f.path("broken.yaml"))]), "invalid YAML");
        has(&run(1, &[p(&machine)]), "--secret");
        has(
            &run(1, &[p(&machine), "--secret", p(&bad_secret)]),
            "stringData.authorized_keys",
        );
        // 2: cannot be used at all.
        has(
            &run(2, &["does-not-exist.yaml"]),
            "does-not-exist.yaml: cannot read",
        );
        has(&run(2, &[p(f.dir.path())]), "is a directory");
        has(
            &run(2, &[p(&f.path("binary.yaml"))]),
            "a NUL byte at byte offset 7",
        );
        has(
            &run(2, &[p(&f.path("latin1.yaml"))]),
            "not UTF-8 text: byte 0xe9",
        );
        has(
            &run(2, &[p(&f.path("secret.yaml"))]),
            "no Machine manifest in this file",
        );
        has(
            &run(
                2,
                &[p(&machine), "--secret", p(&f.path("missing-keys.yaml"))],
            ),
            "missing-keys.yaml: cannot read",
        );
        has(
            &run(2, &[p(&machine), "--secret", p(&f.path("binary.yaml"))]),
            "binary file",
        );
        run(2, &["examples/machines/dns01.yaml", "--frobnicate"]);
        assert!(
            !f.path("out.iso").exists(),
            "{cmd} wrote an image it refused"
        );
    }
    // 2: the output cannot be written.
    let file = f.path("a-file");
    std::fs::write(&file, "").unwrap();
    let out = expect(
        2,
        &["render", "examples/machines/dns01.yaml", "--dir", p(&file)],
    );
    has(
        &out,
        "a-file: cannot write: exists and is not a directory (--dir takes a directory",
    );
    let out = expect(
        2,
        &[
            "seed",
            "examples/machines/dns01.yaml",
            "--iso",
            p(&file.join("seed.iso")),
        ],
    );
    has(&out, "seed.iso: cannot create its directory");
    let out = expect(
        2,
        &[
            "seed",
            "examples/machines/dns01.yaml",
            "--iso",
            p(f.dir.path()),
        ],
    );
    has(&out, "cannot write: is a directory (name the image file");
}

#[test]
fn compose() {
    let f = Inputs::new();
    let ex = |n: &str| format!("example/{n}");
    let (xr, comp, secret) = (ex("xr.yaml"), ex("composition.yaml"), ex("secret.yaml"));
    // 0: composed, and waiting for the Secret.
    let out = expect(0, &["compose", &xr, "--input", &comp, "--secret", &secret]);
    has(&out, "kind: EnvironmentFile");
    let out = expect(0, &["compose", &xr, "--input", &comp]);
    has(&out, "default/admin-keys");
    // 1: a Fatal result, an observed resource without its name.
    let small = f.path("small.yaml");
    std::fs::write(
        &small,
        std::fs::read_to_string(repo().join(&xr))
            .unwrap()
            .replace("size: 40", "size: 2"),
    )
    .unwrap();
    has(
        &expect(
            1,
            &["compose", p(&small), "--input", &comp, "--secret", &secret],
        ),
        "spec.disk.size: 2 is out of range",
    );
    has(
        &expect(2, &["compose", p(&f.path("broken.yaml"))]),
        "broken.yaml:3:7: invalid YAML: unclosed bracket",
    );
    has(
        &expect(
            1,
            &["compose", &xr, "--observed", p(&f.path("secret.yaml"))],
        ),
        "has no crossplane.io/composition-resource-name annotation",
    );
    // 2: cannot be used at all.
    has(
        &expect(2, &["compose", "missing.yaml"]),
        "missing.yaml: cannot read",
    );
    has(
        &expect(2, &["compose", p(&f.path("binary.yaml"))]),
        "binary file",
    );
    has(
        &expect(2, &["compose", p(&f.path("latin1.yaml"))]),
        "not UTF-8 text",
    );
    has(
        &expect(2, &["compose", &secret]),
        "no Machine or XMachine in this file",
    );
    has(
        &expect(2, &["compose", &xr, "--input", &secret]),
        "holds no fabric.kubelize.io/v1beta1 Input",
    );
    has(
        &expect(2, &["compose", &xr, "--observed", "gone.yaml"]),
        "gone.yaml: cannot read",
    );
    expect(2, &["compose"]);
}

fn wait_connectable(port: u16, child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("fabric exited with {status} before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listened on 127.0.0.1:{port}");
}

fn terminate(child: Child) -> Output {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn function() {
    // 1: the port is in use (a real listener on 127.0.0.1 holds it).
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let out = expect(
        1,
        &[
            "function",
            "--insecure",
            "--address",
            &address,
            "--metrics-address",
            "",
        ],
    );
    has(&out, &format!("cannot listen on {address} (--address): Address already in use (os error 98); choose another --address or stop the process using it"));
    let free = format!("127.0.0.1:{}", free_port());
    let out = expect(
        1,
        &[
            "function",
            "--insecure",
            "--address",
            &free,
            "--metrics-address",
            &address,
        ],
    );
    has(
        &out,
        &format!("cannot listen on {address} (--metrics-address): Address already in use"),
    );
    // 1: an address of no interface here (TEST-NET-1; only bound, never sent to).
    let out = expect(
        1,
        &[
            "function",
            "--insecure",
            "--address",
            "192.0.2.1:9443",
            "--metrics-address",
            "",
        ],
    );
    has(&out, "cannot listen on 192.0.2.1:9443 (--address)");
    has(&out, "give --address an address of this host");
    // 2: flags that cannot work.
    has(
        &expect(2, &["function", "--insecure", "--address", "nope"]),
        "--address nope:",
    );
    has(
        &expect(
            2,
            &["function", "--address", &free, "--metrics-address", ""],
        ),
        "supply --tls-certs-dir or use --insecure",
    );
    has(
        &expect(
            2,
            &[
                "function",
                "--address",
                &free,
                "--metrics-address",
                "",
                "--tls-certs-dir",
                "/nonexistent",
            ],
        ),
        "cannot read TLS certificate or key from /nonexistent/tls.crt",
    );
    expect(2, &["function", "--frobnicate"]);
    drop(held);

    // 0: a clean shutdown on SIGTERM.
    let port = free_port();
    let mut child = fabric()
        .args([
            "function",
            "--insecure",
            "--address",
            &format!("127.0.0.1:{port}"),
            "--metrics-address",
            "",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_connectable(port, &mut child);
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The listening TCP sockets of a process, from /proc (no traffic).
fn listening(pid: u32) -> BTreeSet<SocketAddr> {
    let mut inodes = BTreeSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(t) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // 0A is TCP_LISTEN.
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            let (host, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            // The kernel prints each 32-bit word of the address in host order.
            let words: Vec<[u8; 4]> = (0..host.len() / 8)
                .map(|i| {
                    u32::from_str_radix(&host[i * 8..i * 8 + 8], 16)
                        .unwrap()
                        .to_ne_bytes()
                })
                .collect();
            let ip = if v6 {
                let bytes: Vec<u8> = words.concat();
                let b: [u8; 16] = bytes.try_into().unwrap();
                std::net::IpAddr::V6(Ipv6Addr::from(b))
            } else {
                std::net::IpAddr::V4(Ipv4Addr::from(words[0]))
            };
            out.insert(SocketAddr::new(ip, port));
        }
    }
    out
}

/// Without --metrics-address, metrics listen beside the gRPC address: with
/// --address on loopback, on 127.0.0.1:8080 and not on every interface.
#[test]
fn function_metrics_listen_on_the_host_of_the_grpc_address() {
    let port = free_port();
    let grpc: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    // 8080 is one port for the whole machine: another run of this test
    // suite (a second clone, a CI job beside it) waits for this one.
    let machine_wide = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("fabric-tests-port-8080.lock"))
        .unwrap();
    rustix::fs::flock(&machine_wide, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert!(
        TcpListener::bind(metrics).is_ok(),
        "this test needs 127.0.0.1:8080 free (the default metrics port)"
    );
    let mut child = fabric()
        .args(["function", "--insecure", "--address", &grpc.to_string()])
        .env_remove("METRICS_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let mut seen = BTreeSet::new();
    while Instant::now() < until && seen.len() < 2 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("fabric function exited with {status}");
        }
        seen = listening(child.id());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = terminate(child);
    rustix::fs::flock(&machine_wide, rustix::fs::FlockOperation::Unlock).unwrap();
    assert_eq!(
        seen,
        BTreeSet::from([grpc, metrics]),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `fabric` as the converge units run it, under the fixture's root.
fn converge(f: &Fixture, args: &[&str]) -> Command {
    let mut c = fabric();
    c.arg(args[0])
        .args(["--root", p(&f.root)])
        .args(&args[1..])
        .env("PATH", f.path_var())
        .env("NIX_CONFIG", NIX_CONFIG)
        .env_remove("JOURNAL_STREAM");
    c
}

#[test]
fn bootstrap_agent_status_doctor_succeed_and_report() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    // bootstrap 0: complete, then already complete.
    has(
        &expect_cmd(0, &mut converge(&f, &["bootstrap"])),
        "complete: ",
    );
    has(
        &expect_cmd(0, &mut converge(&f, &["bootstrap"])),
        "already complete",
    );
    // agent --once 0: nothing changed, then converged on a new head.
    has(
        &expect_cmd(0, &mut converge(&f, &["agent", "--once"])),
        "no change: ",
    );
    f.commit(&Gen::new("v2"));
    has(
        &expect_cmd(0, &mut converge(&f, &["agent", "--once"])),
        "switched: ",
    );
    // status 0, doctor 0 (a cloud-init that finished without errors).
    has(
        &expect_cmd(0, &mut converge(&f, &["status"])),
        "bootstrap:     complete",
    );
    std::fs::create_dir_all(f.root.join("var/lib/cloud/data")).unwrap();
    std::fs::write(
        f.root.join("var/lib/cloud/data/result.json"),
        r#"{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}"#,
    )
    .unwrap();
    expect_cmd(0, &mut converge(&f, &["doctor"]));
    // status 1: a corrupt state file, named with line and column.
    std::fs::write(f.state_file("agent.json"), "{\"schema\": 1,\n  oops").unwrap();
    has(
        &expect_cmd(1, &mut converge(&f, &["status"])),
        "agent.json:2:",
    );
    // doctor 1: a flake target that others can write.
    f.write_target(0o666);
    has(&expect_cmd(1, &mut converge(&f, &["doctor"])), "FAIL");
}

#[test]
fn bootstrap_failures() {
    common::require_nix();
    let f = Fixture::new();
    // 2: refused targets, a bad --root, bad flags.
    f.commit(&Gen::new("v1").broken());
    f.write_target(0o666);
    has(
        &expect_cmd(2, &mut converge(&f, &["bootstrap"])),
        "nix-flake-target",
    );
    f.write_target_text("https://example.org/fleet.tar.gz#host\n", 0o644);
    has(
        &expect_cmd(2, &mut converge(&f, &["bootstrap"])),
        "is not a Git flake",
    );
    has(
        &expect(2, &["bootstrap", "--root", "/nonexistent/fabric-root"]),
        "--root /nonexistent/fabric-root: No such file or directory",
    );
    has(
        &expect(2, &["bootstrap", "--root", "relative"]),
        "must be an absolute path",
    );
    expect(2, &["bootstrap", "--timeout", "soon"]);
    // 2: a credential file others can read, and a token for an ssh flake,
    // each named; nothing is fetched.
    f.write_target(0o644);
    // The flag is a path on the machine: joined under --root.
    let tokens = f.root.join("run/secrets/tokens");
    std::fs::create_dir_all(tokens.parent().unwrap()).unwrap();
    std::fs::write(&tokens, "example.org=t0ken\n").unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = expect_cmd(
        2,
        &mut converge(
            &f,
            &["bootstrap", "--access-tokens-file", "/run/secrets/tokens"],
        ),
    );
    has(
        &out,
        "run/secrets/tokens: the access tokens file is readable by group and others (mode 0644)",
    );
    assert!(
        !text(&out.stderr).contains("t0ken"),
        "{}",
        text(&out.stderr)
    );
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    has(
        &expect_cmd(
            2,
            &mut converge(
                &f,
                &["bootstrap", "--access-tokens-file", "/run/secrets/tokens"],
            ),
        ),
        "an access token is given, but the flake",
    );
    // 1: the remote never answered (within --timeout).
    f.write_target_text(
        &format!("git+file://{}?ref=main#host\n", f.path("no-repo").display()),
        0o644,
    );
    let mut waiting = converge(&f, &["bootstrap", "--timeout", "1s"]);
    has(&expect_cmd(1, &mut waiting), "no-repo");
    // 1: the build failed; the reason is recorded.
    f.write_target(0o644);
    has(
        &expect_cmd(1, &mut converge(&f, &["bootstrap"])),
        "deliberate build failure",
    );
    assert!(f.state_file("bootstrap.json").exists());
    assert!(!f.marker().exists());
}

#[test]
fn bootstrap_rollback_failed_is_4_and_sigterm_is_143() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("template"));
    f.write_target(0o644);
    expect_cmd(0, &mut converge(&f, &["bootstrap"]));
    std::fs::remove_file(f.marker()).unwrap();
    f.commit(&Gen::new("v1").switch_code(4));
    std::fs::write(f.code_override("template"), "2").unwrap();
    has(
        &expect_cmd(4, &mut converge(&f, &["bootstrap"])),
        "rollback",
    );

    f.commit(&Gen::new("v2").held());
    let child = converge(&f, &["bootstrap"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    f.wait_build_started();
    let out = terminate(child);
    f.release_build();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
}

#[test]
fn agent_once_failures() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    expect_cmd(0, &mut converge(&f, &["bootstrap"]));
    // 1: the head was rejected (its build failed). A run error goes to
    // stderr only, as bootstrap's do; stdout is for reports.
    f.commit(&Gen::new("v2").broken());
    let out = expect_cmd(1, &mut converge(&f, &["agent", "--once"]));
    assert!(
        text(&out.stderr).contains("fabric agent: rejected ") && out.stdout.is_empty(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // 0: the head was rejected before, and is not tried again.
    has(
        &expect_cmd(0, &mut converge(&f, &["agent", "--once"])),
        "skipped rejected ",
    );
    // 1: the remote cannot be asked.
    let mut gone = converge(&f, &["agent", "--once", "--flake"]);
    gone.arg(format!(
        "git+file://{}?ref=main#host",
        f.path("no-repo").display()
    ));
    has(&expect_cmd(1, &mut gone), "remote failed");
    // 4: activation failed and so did the rollback.
    f.commit(&Gen::new("v3").switch_code(4));
    std::fs::write(f.code_override("v1"), "2").unwrap();
    has(
        &expect_cmd(4, &mut converge(&f, &["agent", "--once"])),
        "rollback failed",
    );
    // 2: a refused target, a bad --flake, a bad --root.
    f.write_target(0o666);
    has(
        &expect_cmd(2, &mut converge(&f, &["agent", "--once"])),
        "refused: ",
    );
    has(
        &expect(
            2,
            &[
                "agent",
                "--once",
                "--flake",
                "git+https://example.org/fleet",
            ],
        ),
        "#<name>",
    );
    expect(
        2,
        &["agent", "--once", "--root", "/nonexistent/fabric-root"],
    );
    f.write_target(0o644);
    // 2: the first-boot deploy key, picked up by default, does not fit a
    // git+file flake.
    let key = f.root.join("etc/fabric/credentials/ssh-key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    has(
        &expect_cmd(2, &mut converge(&f, &["agent", "--once"])),
        "credential refused: ",
    );
    std::fs::remove_file(&key).unwrap();
    // 3: another run holds the converge lock.
    let lock = std::fs::File::create(f.state_file("converge.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    has(
        &expect_cmd(3, &mut converge(&f, &["agent", "--once"])),
        "busy: ",
    );
    // Unlock, not just close: a child forked by a test on another thread
    // may hold a copy of the descriptor (and with it the lock) until it execs.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock).unwrap();
    drop(lock);
    // 143: stopped by SIGTERM during the build.
    f.commit(&Gen::new("v4").held());
    let child = converge(&f, &["agent", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    f.wait_build_started();
    let out = terminate(child);
    f.release_build();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
}

#[test]
fn agent_once_with_unwritable_state_is_1() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
    // The state directory is a file: no lock, no state can be written.
    std::fs::write(root.path().join("var/lib/fabric"), "").unwrap();
    has(
        &expect(1, &["agent", "--once", "--root", p(root.path())]),
        "state: ",
    );
}

#[test]
fn agent_daemon() {
    // The daemon needs no flake to run: with none it records the refusal
    // every cycle and keeps going.
    let root = tempfile::tempdir().unwrap();
    let r = p(root.path());
    // 1: the metrics port is taken (systemd restarts it: not a usage error).
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    has(
        &expect(1, &["agent", "--root", r, "--metrics-address", &taken]),
        &format!("cannot serve metrics on {taken}"),
    );
    drop(held);
    // 2: bad flags, a bad --root.
    expect(
        2,
        &["agent", "--root", r, "--metrics-address", "everywhere"],
    );
    expect(
        2,
        &[
            "agent",
            "--root",
            "/nonexistent/fabric-root",
            "--no-metrics",
        ],
    );
    // 0: stopped by SIGTERM.
    let port = free_port();
    let mut child = fabric()
        .args(["agent", "--root", r, "--interval", "1h"])
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_connectable(port, &mut child);
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn status_and_doctor_refuse_a_root_that_is_not_a_directory() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, "").unwrap();
    for cmd in ["status", "doctor"] {
        let out = expect(2, &[cmd, "--root", "/nonexistent"]);
        has(
            &out,
            &format!("fabric {cmd}: --root /nonexistent: No such file or directory"),
        );
        assert!(
            out.stdout.is_empty(),
            "{cmd} reported on a root that is not there"
        );
        has(&expect(2, &[cmd, "--root", p(&file)]), "not a directory");
        has(
            &expect(2, &[cmd, "--root", "relative"]),
            "must be an absolute path",
        );
        expect(2, &[cmd, "--frobnicate"]);
    }
    // An existing root with nothing recorded yet: status is ok, doctor is not.
    has(
        &expect(0, &["status", "--root", p(root.path())]),
        "bootstrap:     not complete",
    );
    has(&expect(1, &["doctor", "--root", p(root.path())]), "FAIL");
}

#[test]
fn every_command_help_states_its_exit_status() {
    let top = expect(0, &["--help"]);
    has(&top, "Exit status, for every command:");
    for cmd in [
        "render",
        "seed",
        "validate",
        "compose",
        "function",
        "bootstrap",
        "agent",
        "status",
        "doctor",
    ] {
        let out = expect(0, &[cmd, "--help"]);
        let help = text(&out.stdout).replace('\n', " ");
        assert!(
            help.contains("Exit status"),
            "{cmd} --help has no exit status"
        );
        assert!(
            help.contains(" 2 "),
            "{cmd} --help does not say what 2 means"
        );
    }
    has(&expect(0, &["validate", "--help"]), "--allow-empty");
}

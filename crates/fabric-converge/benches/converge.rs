//! Converge measurements, each against a baseline taken in the same run:
//!
//! 1. the agent's idle RSS (the daemon, after its first cycle and after
//!    more polls), target under 10 MiB;
//! 2. CPU per no-change poll, against a bare `git ls-remote` (the one ref
//!    lookup a poll cannot avoid);
//! 3. bootstrap wall time against running its commands by hand:
//!    `git ls-remote`, `nix build --json` of the pinned toplevel,
//!    `nix-env --set`, `switch-to-configuration switch`.
//!
//! Real Nix, real local Git flakes; only systemd is a stub (see
//! tests/common). Run: `cargo bench -p fabric-converge --bench converge`.
//! Set FABRIC_BIN to a built `fabric` to measure `fabric agent` itself
//! rather than the engine's test driver.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, Gen, NIX_CONFIG};
use fabric_converge::agent::{Agent, CycleResult};
use fabric_converge::bootstrap::bootstrap;
use fabric_converge::process::Cancel;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a test run is no place for timings.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "converge benchmarks: run them with `cargo bench -p fabric-converge --bench converge`"
        );
        return;
    }
    common::require_nix();
    println!(
        "# converge benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    idle_rss();
    poll_cpu();
    bootstrap_overhead();
}

/// CPU (user+sys) of this process and its reaped children, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the ")" of the command name; utime is field 14 overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    (f[11] + f[12] + f[13] + f[14]) / ticks
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn idle_rss() {
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    let sock_path = f.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let root = f.root.display().to_string();
    let (what, mut cmd) = match std::env::var("FABRIC_BIN") {
        Ok(bin) => {
            let mut c = Command::new(&bin);
            c.args([
                "agent",
                "--root",
                &root,
                "--interval",
                "1s",
                "--metrics-address",
                "127.0.0.1:0",
            ])
            .env("PATH", f.path_var())
            .env("NIX_CONFIG", NIX_CONFIG);
            (format!("{bin} agent (metrics endpoint on)"), c)
        }
        Err(_) => (
            "fabric-converge-driver agent (engine only, no metrics endpoint)".to_string(),
            f.driver(&["agent", &root, "1s"]),
        ),
    };
    let mut child = cmd
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut seen = String::new();
    while !seen.contains("READY=1") {
        let n = sock.recv(&mut buf).expect("agent became ready");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Keep reading, as systemd does: a full socket queue blocks the sender.
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while sock.recv(&mut buf).is_ok() {}
    });
    let (first, _) = rss_kib(child.id());
    std::thread::sleep(Duration::from_secs(10));
    let polls = {
        let st = fabric_converge::state::load(&f.state_file("agent.json"))
            .unwrap()
            .unwrap();
        st.last_check.is_some()
    };
    let (after, hwm) = rss_kib(child.id());
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    let _ = child.wait();
    assert!(polls);
    println!("\n## agent idle RSS: {what}");
    println!("after first cycle: {:.1} MiB", first as f64 / 1024.0);
    println!(
        "after ~10 more 1s polls: {:.1} MiB (peak {:.1} MiB); target < 10 MiB",
        after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

fn poll_cpu() {
    const N: u32 = 200;
    let f = Fixture::new();
    let head = f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    let agent = Agent::new(f.agent_opts(), f.runner(), Cancel::new());
    assert!(matches!(agent.cycle(), CycleResult::NoChange { .. }));

    let url = format!("file://{}", f.repo.display());
    let (mut git_cpu, mut git_wall, mut agent_cpu, mut agent_wall) =
        (0.0, Duration::ZERO, 0.0, Duration::ZERO);
    // Interleaved, so that machine load hits both alike.
    for _ in 0..N {
        let (c, t) = (cpu_seconds(), Instant::now());
        let out = Command::new("git")
            .args(["ls-remote", "--", &url, "main"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&head));
        git_wall += t.elapsed();
        git_cpu += cpu_seconds() - c;

        let (c, t) = (cpu_seconds(), Instant::now());
        let r = agent.cycle();
        agent_wall += t.elapsed();
        agent_cpu += cpu_seconds() - c;
        assert!(matches!(r, CycleResult::NoChange { .. }), "{r:?}");
    }
    let per = |d: f64| d * 1000.0 / f64::from(N);
    println!("\n## CPU per no-change poll ({N} polls, interleaved)");
    println!(
        "git ls-remote alone : {:.2} ms CPU, {:.2} ms wall",
        per(git_cpu),
        per(git_wall.as_secs_f64())
    );
    println!(
        "agent cycle         : {:.2} ms CPU, {:.2} ms wall",
        per(agent_cpu),
        per(agent_wall.as_secs_f64())
    );
    println!(
        "ratio agent/git     : {:.2}x CPU",
        agent_cpu / git_cpu.max(1e-9)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bootstrap_overhead() {
    const N: usize = 15;
    let (mut by_hand, mut fabric) = (Vec::new(), Vec::new());
    for i in 0..N {
        // A fresh flake per run: each one evaluates and builds a new toplevel.
        let f = Fixture::new();
        let rev = f.commit(&Gen::new(&format!("hand{i}")));
        let url = format!("file://{}", f.repo.display());
        let t = Instant::now();
        let out = Command::new("git")
            .args(["ls-remote", "--", &url, "main"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let installable = format!(
            "git+file://{}?ref=main&rev={rev}#nixosConfigurations.\"host\".config.system.build.toplevel",
            f.repo.display()
        );
        let out = Command::new("nix")
            .args(["build", "--no-link", "--json", &installable])
            .env("NIX_CONFIG", NIX_CONFIG)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let toplevel = built[0]["outputs"]["out"].as_str().unwrap().to_string();
        std::fs::create_dir_all(f.profile().parent().unwrap()).unwrap();
        let ok = Command::new("nix-env")
            .arg("-p")
            .arg(f.profile())
            .args(["--set", &toplevel])
            .status()
            .unwrap();
        assert!(ok.success());
        let ok = Command::new(format!("{toplevel}/bin/switch-to-configuration"))
            .arg("switch")
            .status()
            .unwrap();
        assert!(ok.success());
        by_hand.push(t.elapsed());

        let f = Fixture::new();
        f.commit(&Gen::new(&format!("fabric{i}")));
        f.write_target(0o644);
        let opts = f.bootstrap_opts();
        let runner = f.runner();
        let t = Instant::now();
        bootstrap(&opts, &runner, &Cancel::new()).unwrap();
        fabric.push(t.elapsed());
    }
    let (h, b) = (median(by_hand), median(fabric));
    println!("\n## bootstrap vs the same commands by hand (median of {N}, fresh flake each)");
    println!(
        "by hand (ls-remote, nix build, nix-env --set, switch): {:.1} ms",
        h.as_secs_f64() * 1000.0
    );
    println!(
        "fabric bootstrap (same + target checks, state, marker, lock, systemctl stub): {:.1} ms",
        b.as_secs_f64() * 1000.0
    );
    println!(
        "overhead: {:+.1} ms ({:.2}x)",
        (b.as_secs_f64() - h.as_secs_f64()) * 1000.0,
        b.as_secs_f64() / h.as_secs_f64()
    );
}

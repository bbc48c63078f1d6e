//! `fabric agent` against real Nix and real local Git flakes (see `common`
//! for what is faked: only systemd).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Fixture, Gen};
use fabric_converge::agent::{Agent, AgentOptions, CycleResult, RebootPolicy};
use fabric_converge::bootstrap::bootstrap;
use fabric_converge::deploy::{ActivationMode, HealthCheck};
use fabric_converge::layout::exit;
use fabric_converge::process::{Cancel, Runner};
use fabric_converge::state::{self, ConvergeLock, Outcome, Phase};
use fabric_converge::{doctor, status};

/// A machine bootstrapped on "v1"; returns (revision, toplevel).
fn bootstrapped(f: &Fixture) -> (String, String) {
    common::require_nix();
    let head = f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    (head, f.current_system().unwrap())
}

fn agent(opts: AgentOptions, runner: &Runner) -> Agent {
    Agent::new(opts, runner.clone(), Cancel::new())
}

#[test]
fn no_rebuild_when_nothing_moved() {
    let f = Fixture::new();
    let (head, v1) = bootstrapped(&f);
    // PATH has git but no nix: building or activating would fail the cycle.
    let runner = f.runner_without_nix();
    let a = agent(f.agent_opts(), &runner);
    for _ in 0..3 {
        let r = a.cycle();
        assert!(
            matches!(&r, CycleResult::NoChange { revision } if revision.as_str() == head),
            "{r:?}"
        );
        assert_eq!(r.exit_code(), exit::OK);
    }
    // One ref lookup per cycle, nothing else.
    let started = runner.started();
    assert_eq!(started.len(), 3, "{started:?}");
    assert!(
        started.iter().all(|a| a[..2] == ["git", "ls-remote"]),
        "{started:?}"
    );
    assert_eq!(f.switches(), ["v1 switch"]);
    assert_eq!(f.current_system().unwrap(), v1);
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert!(st.last_check.is_some() && st.last_success.is_some());
    assert_eq!(
        st.current.unwrap().revision.as_str(),
        head,
        "seeded from bootstrap"
    );
    assert!(st.history.is_empty(), "no deployment happened");
    let metrics = a.metrics().render();
    assert!(metrics.contains("fabric_agent_polls_total 3"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "fabric_agent_current_revision{{revision=\"{head}\",store_path=\"{v1}\"}} 1"
        )),
        "{metrics}"
    );
}

#[test]
fn new_commit_is_built_exactly_and_switched() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    let v2_rev = f.commit(&Gen::new("v2"));
    let healthy = f.path("healthy");
    std::fs::write(&healthy, "").unwrap();
    let mut opts = f.agent_opts();
    opts.activator.health_checks =
        vec![HealthCheck::parse(&format!("test -e '{}'", healthy.display())).unwrap()];
    let runner = f.runner();
    let a = agent(opts, &runner);

    let r = a.cycle();
    let CycleResult::Deployed {
        revision,
        store_path,
        outcome,
        reboot_needed,
    } = &r
    else {
        panic!("expected Deployed, got {r:?}");
    };
    assert_eq!(revision.as_str(), v2_rev);
    assert_eq!(*outcome, Outcome::Switched);
    assert!(!reboot_needed);
    assert_ne!(store_path.as_str(), v1);
    assert_eq!(f.switches(), ["v1 switch", "v2 switch"]);
    assert_eq!(f.profile_target().as_deref(), Some(store_path.as_str()));
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-2-link")
    );
    assert_eq!(f.current_system().as_deref(), Some(store_path.as_str()));
    let build = runner
        .started()
        .into_iter()
        .find(|a| a[0] == "nix")
        .unwrap();
    assert!(
        build.last().unwrap().contains(&format!("&rev={v2_rev}#")),
        "{build:?}"
    );
    assert!(
        runner.started().iter().any(|a| a[0] == "test"),
        "health check ran"
    );

    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert_eq!(st.current.as_ref().unwrap().revision.as_str(), v2_rev);
    let d = st.history.last().unwrap();
    assert_eq!((d.outcome, d.phase), (Outcome::Switched, Phase::Commit));
    assert!(d.build_seconds.is_some() && d.activation_seconds.is_some());

    // A commit that does not change the system: built, not activated.
    let readme_rev = f.commit_readme("docs only");
    let r = a.cycle();
    assert!(
        matches!(&r, CycleResult::Deployed { revision, outcome: Outcome::Unchanged, .. } if revision.as_str() == readme_rev),
        "{r:?}"
    );
    assert_eq!(
        f.switches(),
        ["v1 switch", "v2 switch"],
        "no second activation"
    );
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-2-link")
    );
}

#[test]
fn activation_exit_4_rolls_back_and_is_not_retried() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    let bad = f.commit(&Gen::new("v2").switch_code(4));
    let a = agent(f.agent_opts(), &f.runner());

    let r = a.cycle();
    let CycleResult::Rejected {
        revision,
        outcome,
        failure,
    } = &r
    else {
        panic!("expected Rejected, got {r:?}");
    };
    assert_eq!(revision.as_str(), bad);
    assert_eq!(*outcome, Outcome::RolledBack);
    assert_eq!(failure.phase, Phase::Switch);
    assert_eq!(failure.exit_code, Some(4));
    assert!(failure.message.contains("some units failed"), "{failure:?}");
    assert_eq!(r.exit_code(), exit::FAILED);
    // v2 was switched to, then v1 re-activated; profile and running are v1.
    assert_eq!(f.switches(), ["v1 switch", "v2 switch", "v1 switch"]);
    assert_eq!(f.profile_target().as_deref(), Some(v1.as_str()));
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-1-link")
    );
    assert_eq!(f.current_system().as_deref(), Some(v1.as_str()));
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert_eq!(st.rejected.len(), 1);
    assert_eq!(st.rejected[0].revision.as_str(), bad);
    assert_eq!(st.current.as_ref().unwrap().store_path.as_str(), v1);

    // Not retried while the remote stays there: no nix, no switch.
    let quiet = f.runner_without_nix();
    let again = agent(f.agent_opts(), &quiet).cycle();
    assert!(
        matches!(&again, CycleResult::SkippedRejected { revision, .. } if revision.as_str() == bad),
        "{again:?}"
    );
    assert_eq!(again.exit_code(), exit::OK);
    assert_eq!(f.switches().len(), 3);
    assert!(quiet.started().iter().all(|a| a[0] == "git"));

    // The remote moves: deployed.
    let fixed = f.commit(&Gen::new("v3"));
    let r = a.cycle();
    assert!(
        matches!(&r, CycleResult::Deployed { revision, .. } if revision.as_str() == fixed),
        "{r:?}"
    );
    assert_eq!(f.switches().last().map(String::as_str), Some("v3 switch"));
}

#[test]
fn failing_health_check_rolls_back() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    let bad = f.commit(&Gen::new("v2"));
    let mut opts = f.agent_opts();
    let missing = f.path("service-answers");
    opts.activator.health_checks = vec![
        HealthCheck::parse("true").unwrap(),
        HealthCheck::parse(&format!("test -e '{}'", missing.display())).unwrap(),
    ];
    let r = agent(opts, &f.runner()).cycle();
    let CycleResult::Rejected {
        revision,
        outcome,
        failure,
    } = &r
    else {
        panic!("expected Rejected, got {r:?}");
    };
    assert_eq!(revision.as_str(), bad);
    assert_eq!(*outcome, Outcome::RolledBack);
    assert_eq!(failure.phase, Phase::Health);
    assert!(
        failure.message.contains("health check `test -e"),
        "{failure:?}"
    );
    assert_eq!(f.switches(), ["v1 switch", "v2 switch", "v1 switch"]);
    assert_eq!(f.profile_target().as_deref(), Some(v1.as_str()));
    assert_eq!(f.current_system().as_deref(), Some(v1.as_str()));
    let s = status::status(&f.root());
    assert_eq!(s.store_path.as_ref().map(|p| p.as_str()), Some(v1.as_str()));
    let agent_state = s.agent.state.unwrap();
    assert_eq!(agent_state.last_outcome, Some(Outcome::RolledBack));
    assert_eq!(
        agent_state
            .history
            .last()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .phase,
        Phase::Health
    );
}

#[test]
fn broken_build_changes_nothing() {
    let f = Fixture::new();
    let (head, v1) = bootstrapped(&f);
    let bad = f.commit(&Gen::new("v2").broken());
    let r = agent(f.agent_opts(), &f.runner()).cycle();
    let CycleResult::Rejected {
        revision,
        outcome,
        failure,
    } = &r
    else {
        panic!("expected Rejected, got {r:?}");
    };
    assert_eq!(revision.as_str(), bad);
    assert_eq!(*outcome, Outcome::BuildFailed);
    assert!(
        failure.tail.contains("deliberate build failure in v2"),
        "{failure:?}"
    );
    assert_eq!(f.switches(), ["v1 switch"]);
    assert_eq!(f.profile_target().as_deref(), Some(v1.as_str()));
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-1-link")
    );
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert_eq!(st.current.unwrap().revision.as_str(), head);
}

#[test]
fn reboot_needed_is_reported_and_acted_on_when_asked() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    std::os::unix::fs::symlink(&v1, f.root.join("run/booted-system")).unwrap();

    // Same kernel, but the switch says a reboot is needed (exit 100).
    f.commit(&Gen::new("v2").switch_code(100));
    let a = agent(f.agent_opts(), &f.runner());
    let r = a.cycle();
    assert!(
        matches!(
            r,
            CycleResult::Deployed {
                reboot_needed: true,
                outcome: Outcome::Switched,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(status::status(&f.root()).reboot_needed);
    assert!(a
        .metrics()
        .render()
        .contains("fabric_agent_reboot_needed 1"));
    assert!(
        f.systemd_calls().iter().all(|c| !c.contains("reboot")),
        "--reboot never"
    );

    // A new kernel with --reboot when-needed: systemctl reboot.
    f.commit(&Gen::new("v3").kernel("2"));
    let mut opts = f.agent_opts();
    opts.reboot = RebootPolicy::WhenNeeded;
    let r = agent(opts, &f.runner()).cycle();
    assert!(
        matches!(
            r,
            CycleResult::Deployed {
                reboot_needed: true,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(
        f.systemd_calls().last().map(String::as_str),
        Some("systemctl reboot")
    );

    // Rebooting into it settles it, without a deployment.
    let v3 = f.current_system().unwrap();
    std::fs::remove_file(f.root.join("run/booted-system")).unwrap();
    std::os::unix::fs::symlink(&v3, f.root.join("run/booted-system")).unwrap();
    let r = agent(f.agent_opts(), &f.runner()).cycle();
    assert!(matches!(r, CycleResult::NoChange { .. }), "{r:?}");
    assert!(!status::status(&f.root()).reboot_needed);
    std::fs::remove_file(f.root.join("run/booted-system")).unwrap();
    std::os::unix::fs::symlink(&v1, f.root.join("run/booted-system")).unwrap();

    // Same kernel as booted and a clean switch: no reboot needed.
    f.commit(&Gen::new("v4"));
    let r = agent(f.agent_opts(), &f.runner()).cycle();
    assert!(
        matches!(
            r,
            CycleResult::Deployed {
                reboot_needed: false,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(!status::status(&f.root()).reboot_needed);
}

#[test]
fn transient_unit_activation_goes_through_systemd_run() {
    let f = Fixture::new();
    bootstrapped(&f);
    f.commit(&Gen::new("v2"));
    let mut opts = f.agent_opts();
    opts.activator.mode = ActivationMode::TransientUnit;
    let r = agent(opts, &f.runner()).cycle();
    assert!(matches!(r, CycleResult::Deployed { .. }), "{r:?}");
    let run = f
        .systemd_calls()
        .into_iter()
        .find(|c| c.starts_with("systemd-run"))
        .unwrap();
    assert!(
        run.starts_with("systemd-run --collect --no-ask-password --pipe --quiet --service-type=exec --unit=fabric-switch-"),
        "{run}"
    );
    assert!(
        run.ends_with("-nixos-system-host-v2/bin/switch-to-configuration switch"),
        "{run}"
    );
    assert_eq!(f.switches().last().map(String::as_str), Some("v2 switch"));
}

#[test]
fn a_held_lock_skips_the_cycle() {
    let f = Fixture::new();
    bootstrapped(&f);
    f.commit(&Gen::new("v2"));
    let lock = ConvergeLock::try_acquire(&f.state_file("converge.lock")).unwrap();
    let runner = f.runner();
    let r = agent(f.agent_opts(), &runner).cycle();
    assert!(
        matches!(&r, CycleResult::Busy { holder } if holder == &std::process::id().to_string()),
        "{r:?}"
    );
    assert_eq!(r.exit_code(), exit::BUSY);
    assert!(runner.started().is_empty());
    drop(lock);
    assert!(matches!(
        agent(f.agent_opts(), &runner).cycle(),
        CycleResult::Deployed { .. }
    ));
}

#[test]
fn sigterm_during_build_cancels_cleanly() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    f.commit(&Gen::new("v2").held());
    let root = f.root.display().to_string();
    let child = f
        .driver(&["agent-once", &root])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let builder = f.wait_build_started();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sent = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(i32::from(exit::CANCELLED)));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "cancelled");
    // Nothing activated, the profile untouched, the build gone.
    assert_eq!(f.switches(), ["v1 switch"]);
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-1-link")
    );
    assert_eq!(f.current_system().as_deref(), Some(v1.as_str()));
    let until = Instant::now() + Duration::from_secs(10);
    while common::alive(builder) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!common::alive(builder), "nix left its builder running");
    f.release_build();
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    let d = st.history.last().unwrap();
    assert_eq!((d.outcome, d.phase), (Outcome::Cancelled, Phase::Build));
    assert!(
        st.rejected.is_empty(),
        "a cancelled build is not a rejection"
    );
}

#[test]
fn daemon_notifies_systemd_and_stops_on_sigterm() {
    let f = Fixture::new();
    let (head, _) = bootstrapped(&f);
    let socket_path = f.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let root = f.root.display().to_string();
    let child = f
        .driver(&["agent", &root, "1s"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let until = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < until
        && !(seen.contains("READY=1")
            && seen.contains("WATCHDOG=1")
            && seen.matches("STATUS=").count() >= 2)
    {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("READY=1"), "{seen}");
    // Ready before the first cycle ends: a long first deploy must not hold
    // `systemctl start` (and the boot) until it is done.
    assert!(
        seen.find("READY=1") < seen.find("STATUS="),
        "READY=1 came after the first cycle: {seen}"
    );
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
    assert!(
        seen.contains(&format!("STATUS=converged on {}", &head[..12])),
        "{seen}"
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !seen.contains("STOPPING=1") {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("STOPPING=1"), "{seen}");
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert!(st.interval_seconds == Some(1));
}

#[test]
fn corrupt_agent_state_is_reported_and_recovered() {
    let f = Fixture::new();
    let (head, _) = bootstrapped(&f);
    let path = f.state_file("agent.json");
    std::fs::write(&path, "{\"schema\": 1, \"phase\": 7}").unwrap();
    let s = status::status(&f.root());
    let e = s.agent.error.as_deref().unwrap();
    assert!(e.starts_with(&format!("{}:1:", path.display())), "{e}");
    assert!(e.contains("state file is corrupt"), "{e}");
    assert_eq!(s.exit_code(), exit::FAILED);
    let report = doctor::doctor(&doctor::DoctorOptions::new(f.root()), &f.runner());
    let agent_check = report.checks.iter().find(|c| c.name == "agent").unwrap();
    assert_eq!(agent_check.verdict, doctor::Verdict::Fail);

    let r = agent(f.agent_opts(), &f.runner()).cycle();
    assert!(
        matches!(&r, CycleResult::NoChange { revision } if revision.as_str() == head),
        "{r:?}"
    );
    assert!(state::load(&path).unwrap().is_some());
    let kept = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("agent.json.corrupt-")
        })
        .count();
    assert_eq!(kept, 1);
    assert_eq!(status::status(&f.root()).exit_code(), exit::OK);
}

#[test]
fn doctor_runs_the_checklist() {
    let f = Fixture::new();
    bootstrapped(&f);
    agent(f.agent_opts(), &f.runner()).cycle();
    std::fs::create_dir_all(f.root.join("var/lib/cloud/data")).unwrap();
    std::fs::write(
        f.root.join("var/lib/cloud/data/result.json"),
        r#"{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}"#,
    )
    .unwrap();
    let opts = doctor::DoctorOptions::new(f.root());
    let report = doctor::doctor(&opts, &f.runner());
    let verdict = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .verdict
    };
    let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "flake target",
            "credential",
            "tools",
            "remote",
            "bootstrap",
            "cloud-init",
            "agent",
            "disk /nix"
        ]
    );
    assert_eq!(
        verdict("flake target"),
        doctor::Verdict::Warn,
        "git+file:// is for tests"
    );
    assert_eq!(verdict("credential"), doctor::Verdict::Pass, "none needed");
    assert_eq!(verdict("tools"), doctor::Verdict::Pass);
    assert_eq!(verdict("remote"), doctor::Verdict::Pass);
    assert_eq!(verdict("bootstrap"), doctor::Verdict::Pass);
    assert_eq!(verdict("cloud-init"), doctor::Verdict::Pass);
    assert_eq!(verdict("agent"), doctor::Verdict::Pass);
    assert_eq!(report.exit_code(), exit::OK, "{}", report.render());

    // Break things: every failure comes with a hint.
    f.write_target(0o646);
    std::fs::write(
        f.root.join("var/lib/cloud/data/result.json"),
        r#"{"v1": {"errors": ["('write_files', OSError(30, 'Read-only file system'))"]}}"#,
    )
    .unwrap();
    let report = doctor::doctor(&opts, &f.runner_without_tools());
    let failing: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.verdict == doctor::Verdict::Fail)
        .collect();
    let failing_names: Vec<_> = failing.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(failing_names, ["flake target", "tools", "cloud-init"]);
    assert!(failing.iter().all(|c| !c.hint.is_empty()));
    assert!(
        failing[0].detail.contains("writable by others"),
        "{:?}",
        failing[0]
    );
    assert!(
        failing[2].detail.contains("Read-only file system"),
        "{:?}",
        failing[2]
    );
    assert_eq!(report.exit_code(), exit::FAILED);
    let text = report.render();
    assert!(text.contains("[FAIL] flake target: "), "{text}");
    assert!(text.contains("       hint: "), "{text}");
}

#[test]
fn metrics_endpoint_serves_the_agent_state() {
    let f = Fixture::new();
    let (head, _) = bootstrapped(&f);
    let a = agent(f.agent_opts(), &f.runner());
    a.cycle();
    let addr =
        fabric_converge::metrics::serve("127.0.0.1:0".parse().unwrap(), a.metrics()).unwrap();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    for name in [
        "fabric_agent_last_check_timestamp_seconds ",
        "fabric_agent_last_success_timestamp_seconds ",
        "fabric_agent_rejected_revisions 0",
        "fabric_agent_reboot_needed 0",
        "fabric_agent_polls_total 1",
        "fabric_agent_resident_memory_bytes ",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(body.contains(&format!("revision=\"{head}\"")), "{body}");
}

#[test]
fn a_health_check_that_hangs_times_out_and_rolls_back() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    f.commit(&Gen::new("v2"));
    let mut opts = f.agent_opts();
    opts.activator.health_checks = vec![HealthCheck::parse("sleep 30").unwrap()];
    opts.activator.health_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let r = agent(opts, &f.runner()).cycle();
    assert!(started.elapsed() < Duration::from_secs(20));
    let CycleResult::Rejected {
        failure, outcome, ..
    } = &r
    else {
        panic!("expected Rejected, got {r:?}");
    };
    assert_eq!(*outcome, Outcome::RolledBack);
    assert_eq!(failure.phase, Phase::Health);
    assert!(
        failure.message.contains("did not finish within 500ms"),
        "{failure:?}"
    );
    assert_eq!(f.current_system().as_deref(), Some(v1.as_str()));
}

#[test]
fn flake_from_the_command_line_needs_no_target_file() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    std::fs::remove_file(f.root.join("etc/nix-flake-target")).unwrap();
    let v2 = f.commit(&Gen::new("v2"));

    // Without --flake, the missing target file is a usage error.
    let r = agent(f.agent_opts(), &f.runner()).cycle();
    assert!(
        matches!(&r, CycleResult::TargetRefused { message } if message.contains("nix-flake-target")),
        "{r:?}"
    );
    assert_eq!(r.exit_code(), exit::USAGE);
    assert_eq!(f.current_system().as_deref(), Some(v1.as_str()));

    let mut opts = f.agent_opts();
    opts.flake = fabric_converge::agent::FlakeSource::Fixed(
        fabric_model::FlakeRef::parse(&f.flake_ref()).unwrap(),
    );
    let r = agent(opts, &f.runner()).cycle();
    assert!(
        matches!(&r, CycleResult::Deployed { revision, .. } if revision.as_str() == v2),
        "{r:?}"
    );
}

#[test]
fn a_failed_rollback_is_exit_4_and_says_so() {
    let f = Fixture::new();
    bootstrapped(&f);
    let bad = f.commit(&Gen::new("v2").switch_code(4));
    // From now on the previous generation cannot be re-activated either.
    std::fs::write(f.code_override("v1"), "2").unwrap();
    let r = agent(f.agent_opts(), &f.runner()).cycle();
    let CycleResult::RollbackFailed { revision, failure } = &r else {
        panic!("expected RollbackFailed, got {r:?}");
    };
    assert_eq!(revision.as_str(), bad);
    assert_eq!(r.exit_code(), exit::ROLLBACK_FAILED);
    assert_eq!(failure.phase, Phase::Rollback);
    assert!(
        failure.message.contains("exited with code 4"),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("the rollback failed too"),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("the activation script failed"),
        "{failure:?}"
    );
    assert_eq!(f.switches(), ["v1 switch", "v2 switch", "v1 switch"]);
    let st = state::load(&f.state_file("agent.json")).unwrap().unwrap();
    assert_eq!(st.last_outcome, Some(Outcome::RollbackFailed));
    assert_eq!(st.rejected.last().unwrap().revision.as_str(), bad);
    let report = doctor::doctor(&doctor::DoctorOptions::new(f.root()), &f.runner());
    let check = report.checks.iter().find(|c| c.name == "agent").unwrap();
    assert_eq!(check.verdict, doctor::Verdict::Fail, "{check:?}");
}

#[test]
fn a_system_switched_behind_its_back_is_converged_again() {
    let f = Fixture::new();
    let (_, v1) = bootstrapped(&f);
    f.commit(&Gen::new("v2"));
    let a = agent(f.agent_opts(), &f.runner());
    let CycleResult::Deployed { store_path: v2, .. } = a.cycle() else {
        panic!("v2 not deployed");
    };
    // Someone activates v1 by hand; the remote has not moved.
    std::fs::remove_file(f.root.join("run/current-system")).unwrap();
    std::os::unix::fs::symlink(&v1, f.root.join("run/current-system")).unwrap();
    let r = a.cycle();
    assert!(
        matches!(&r, CycleResult::Deployed { outcome: Outcome::Switched, store_path, .. } if store_path == &v2),
        "{r:?}"
    );
    assert_eq!(f.switches(), ["v1 switch", "v2 switch", "v2 switch"]);
    assert_eq!(f.current_system().as_deref(), Some(v2.as_str()));
    assert!(matches!(a.cycle(), CycleResult::NoChange { .. }));
}

#[test]
fn status_shows_history_and_round_trips_as_json() {
    let f = Fixture::new();
    let (v1_rev, _) = bootstrapped(&f);
    let bad = f.commit(&Gen::new("v2").broken());
    agent(f.agent_opts(), &f.runner()).cycle();
    let good = f.commit(&Gen::new("v3"));
    agent(f.agent_opts(), &f.runner()).cycle();

    let s = status::status(&f.root());
    let json = serde_json::to_string(&s).unwrap();
    let back: status::StatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(s.revision.as_ref().unwrap().as_str(), good);
    assert_eq!(s.running, s.store_path);
    let history = &s.agent.state.as_ref().unwrap().history;
    let seen: Vec<_> = history
        .iter()
        .map(|d| (d.revision.as_ref().unwrap().as_str(), d.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            (bad.as_str(), Outcome::BuildFailed),
            (good.as_str(), Outcome::Switched)
        ]
    );

    let text = s.render();
    assert!(text.contains(&format!("revision:      {good}\n")), "{text}");
    assert!(text.contains("reboot needed: no\n"), "{text}");
    assert!(
        text.contains(&format!("  {}  switched  /nix/store/", &good[..12])),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {}  build-failed", &bad[..12])),
        "{text}"
    );
    assert!(
        text.contains("      failed in build: nix build failed: "),
        "{text}"
    );
    assert!(
        text.contains("      | nixos-system-host-v2> error: deliberate build failure in v2"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  rejected:     {bad} (build-failed at ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("  {}  switched", &v1_rev[..12])),
        "bootstrap history: {text}"
    );
}

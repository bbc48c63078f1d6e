//! `fabric bootstrap` against real Nix and real local Git flakes (see
//! `common` for what is faked: only systemd).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Fixture, Gen};
use fabric_converge::bootstrap::{bootstrap, BootstrapError, BootstrapReport};
use fabric_converge::layout::exit;
use fabric_converge::process::Cancel;
use fabric_converge::state::{self, Outcome, Phase};
use fabric_converge::status;

#[test]
fn first_boot_builds_the_remote_head_switches_and_records() {
    common::require_nix();
    let f = Fixture::new();
    let head = f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    let runner = f.runner();

    let report = bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).unwrap();
    let BootstrapReport::Completed {
        revision,
        store_path,
        outcome,
        reboot_needed,
    } = report
    else {
        panic!("expected Completed, got {report:?}");
    };
    assert_eq!(revision.as_str(), head);
    assert_eq!(outcome, Outcome::Switched);
    assert!(!reboot_needed);
    assert!(store_path.as_str().ends_with("-nixos-system-host-v1"));

    // Exactly that revision was built, pinned with rev=.
    let builds: Vec<_> = runner
        .started()
        .into_iter()
        .filter(|a| a[0] == "nix")
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let installable = builds[0].last().unwrap();
    assert_eq!(
        installable,
        &format!(
            "git+file://{}?ref=main&rev={head}#nixosConfigurations.\"host\".config.system.build.toplevel",
            f.repo.display()
        )
    );

    // Profile set, switched once, running system recorded.
    assert_eq!(f.switches(), ["v1 switch"]);
    assert_eq!(f.profile_target().as_deref(), Some(store_path.as_str()));
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-1-link")
    );
    assert_eq!(f.current_system().as_deref(), Some(store_path.as_str()));

    // Marker, state, unit disabled.
    let marker = std::fs::read_to_string(f.marker()).unwrap();
    assert!(marker.contains(&head), "{marker}");
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(st.current.as_ref().unwrap().revision.as_str(), head);
    assert_eq!(st.current.as_ref().unwrap().store_path, store_path);
    assert_eq!(st.last_outcome, Some(Outcome::Switched));
    assert_eq!(st.phase, Phase::Idle);
    assert_eq!(st.history.len(), 1);
    assert!(st.history[0].build_seconds.is_some());
    assert_eq!(
        f.systemd_calls(),
        [format!(
            "systemctl --root={} disable --no-reload fabric-bootstrap.service",
            f.root.display()
        )]
    );

    // status agrees.
    let s = status::status(&f.root());
    assert!(s.bootstrap_complete);
    assert_eq!(s.revision.as_ref().map(|r| r.as_str()), Some(head.as_str()));
    assert_eq!(s.running.as_ref(), Some(&store_path));
    assert_eq!(s.exit_code(), exit::OK);
}

#[test]
fn rerun_after_completion_exits_at_once() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    let state_before = std::fs::read(f.state_file("bootstrap.json")).unwrap();

    // No git, no nix on PATH: the re-run must not need them.
    let runner = f.runner_without_tools();
    let again = bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).unwrap();
    assert_eq!(again, BootstrapReport::AlreadyComplete);
    assert!(runner.started().is_empty(), "{:?}", runner.started());
    assert_eq!(f.switches(), ["v1 switch"]);
    assert_eq!(
        std::fs::read(f.state_file("bootstrap.json")).unwrap(),
        state_before
    );
}

#[test]
fn waits_for_a_remote_that_is_not_there_yet() {
    common::require_nix();
    let f = Fixture::new();
    f.write_target(0o644); // points at a repository that does not exist yet
    let opts = f.bootstrap_opts();
    let runner = f.runner();
    let result = std::thread::scope(|s| {
        let worker = s.spawn(|| bootstrap(&opts, &runner, &Cancel::new()));
        std::thread::sleep(Duration::from_millis(1500));
        f.commit(&Gen::new("v1"));
        worker.join().unwrap()
    });
    let report = result.unwrap();
    assert!(
        matches!(report, BootstrapReport::Completed { .. }),
        "{report:?}"
    );
    let lookups = runner
        .started()
        .into_iter()
        .filter(|a| a[0] == "git" && a[1] == "ls-remote")
        .count();
    assert!(lookups >= 2, "expected several attempts, got {lookups}");
    assert_eq!(f.switches(), ["v1 switch"]);
}

#[test]
fn gives_up_on_a_remote_that_never_answers_and_records_why() {
    common::require_nix();
    let f = Fixture::new();
    f.write_target(0o644);
    let mut opts = f.bootstrap_opts();
    opts.backoff.timeout = Duration::from_secs(1);
    let err = bootstrap(&opts, &f.runner(), &Cancel::new()).unwrap_err();
    assert_eq!(err.exit_code(), exit::FAILED);
    assert!(
        err.to_string().contains("gave up waiting for file://"),
        "{err}"
    );
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    let d = st.history.last().unwrap();
    assert_eq!(d.outcome, Outcome::Failed);
    let e = d.error.as_ref().unwrap();
    assert_eq!(e.phase, Phase::WaitRemote);
    assert!(
        e.command.as_deref().unwrap().starts_with("git ls-remote"),
        "{e:?}"
    );
    assert!(
        e.tail.contains("does not appear to be a git repository"),
        "{e:?}"
    );
    assert!(!f.marker().exists());
}

#[test]
fn refuses_a_world_writable_target() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o666);
    let runner = f.runner();
    let err = bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).unwrap_err();
    assert!(matches!(err, BootstrapError::Target(_)), "{err:?}");
    assert_eq!(err.exit_code(), exit::USAGE);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}/etc/nix-flake-target: ", f.root.display())),
        "{msg}"
    );
    assert!(
        msg.contains("writable by group and others (mode 0666)"),
        "{msg}"
    );
    assert!(
        runner.started().is_empty(),
        "nothing may run: {:?}",
        runner.started()
    );
    assert!(!f.marker().exists());
    assert!(f.profile_target().is_none());
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(
        st.history.last().unwrap().error.as_ref().unwrap().phase,
        Phase::ReadTarget
    );

    // Fixing the mode is all it takes.
    f.write_target(0o644);
    assert!(bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).is_ok());
}

#[test]
fn broken_build_records_why_and_a_fixed_remote_succeeds() {
    common::require_nix();
    let f = Fixture::new();
    let bad = f.commit(&Gen::new("v1").broken());
    f.write_target(0o644);
    let err = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap_err();
    assert_eq!(err.exit_code(), exit::FAILED);
    assert!(
        err.to_string().contains("deliberate build failure in v1"),
        "{err}"
    );
    assert!(!f.marker().exists());
    assert!(f.profile_target().is_none());
    assert!(f.switches().is_empty());
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    let d = st.history.last().unwrap();
    assert_eq!(d.outcome, Outcome::BuildFailed);
    assert_eq!(d.revision.as_ref().unwrap().as_str(), bad);
    let e = d.error.as_ref().unwrap();
    assert_eq!(e.phase, Phase::Build);
    assert!(
        e.command.as_deref().unwrap().starts_with("nix build"),
        "{e:?}"
    );
    assert!(e.tail.contains("deliberate build failure in v1"), "{e:?}");
    assert_eq!(e.exit_code, Some(1));

    let good = f.commit(&Gen::new("v2"));
    let report = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    assert!(
        matches!(report, BootstrapReport::Completed { ref revision, .. } if revision.as_str() == good)
    );
    assert_eq!(f.switches(), ["v2 switch"]);
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    let outcomes: Vec<_> = st.history.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [Outcome::BuildFailed, Outcome::Switched]);
}

#[test]
fn activation_failure_restores_the_running_generation() {
    common::require_nix();
    let f = Fixture::new();
    // A machine already running "template" (what the VM image booted).
    f.commit(&Gen::new("template"));
    f.write_target(0o644);
    bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    let template = f.current_system().unwrap();
    std::fs::remove_file(f.marker()).unwrap();

    f.commit(&Gen::new("v1").switch_code(4));
    let err = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap_err();
    assert_eq!(err.exit_code(), exit::FAILED);
    assert!(
        err.to_string()
            .contains("exited with code 4: some units failed"),
        "{err}"
    );
    assert_eq!(
        f.switches(),
        ["template switch", "v1 switch", "template switch"]
    );
    assert_eq!(f.profile_target().as_deref(), Some(template.as_str()));
    assert_eq!(f.current_system().as_deref(), Some(template.as_str()));
    assert!(!f.marker().exists());
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(st.last_outcome, Some(Outcome::RolledBack));
}

#[test]
fn two_concurrent_runs_activate_once() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1").held());
    f.write_target(0o644);
    let root = f.root.display().to_string();
    let spawn = || {
        f.driver(&["bootstrap", &root])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    f.wait_build_started();
    // Both are running: one builds, the other waits on the lock.
    std::thread::sleep(Duration::from_millis(500));
    f.release_build();
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    for o in &outs {
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let mut results: Vec<String> = outs
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["result"].as_str().unwrap().to_string()
        })
        .collect();
    results.sort();
    assert_eq!(results, ["already-complete", "completed"]);
    assert_eq!(f.switches(), ["v1 switch"], "activated exactly once");
}

#[test]
fn kill_9_mid_build_then_rerun_completes() {
    common::require_nix();
    let f = Fixture::new();
    let head = f.commit(&Gen::new("v1").held());
    f.write_target(0o644);
    let root = f.root.display().to_string();
    let mut child = {
        use std::os::unix::process::CommandExt;
        f.driver(&["bootstrap", &root])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let builder = f.wait_build_started();
    // What systemd does to a unit's cgroup on a hard stop: SIGKILL to every
    // process in it. Nix puts its builder in a session of its own, so it is
    // killed separately, as the cgroup would.
    let pgid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    if let Some(b) = rustix::process::Pid::from_raw(builder) {
        let _ = rustix::process::kill_process(b, rustix::process::Signal::KILL);
    }
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // The killed run left its phase behind and nothing half-done.
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(st.phase, Phase::Build);
    assert_eq!(st.history.last().unwrap().outcome, Outcome::InProgress);
    assert!(!f.marker().exists());
    assert!(f.profile_target().is_none());
    assert!(f.switches().is_empty());

    f.release_build();
    let report = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    assert!(
        matches!(report, BootstrapReport::Completed { ref revision, .. } if revision.as_str() == head)
    );
    assert_eq!(f.switches(), ["v1 switch"]);
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    let outcomes: Vec<_> = st.history.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Switched]);
    assert!(st.history[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("killed during phase build"));
}

#[test]
fn corrupt_state_file_is_reported_and_recovered() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    f.write_target(0o644);
    let path = f.state_file("bootstrap.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"schema\": 1,\n  \"phase\": \"build\",\n  garbage").unwrap();

    // status: a clear, located message, and a failing exit code.
    let s = status::status(&f.root());
    let e = s.bootstrap.error.as_deref().unwrap();
    assert!(
        e.starts_with(&format!("{}:3:3: state file is corrupt", path.display())),
        "{e}"
    );
    assert_eq!(s.exit_code(), exit::FAILED);

    // bootstrap: moves it aside, keeps it for a human, and completes.
    let report = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    assert!(matches!(report, BootstrapReport::Completed { .. }));
    let kept: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bootstrap.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(state::load(&path).unwrap().is_some());
    assert_eq!(status::status(&f.root()).exit_code(), exit::OK);
}

#[test]
fn kill_9_mid_activation_then_rerun_completes() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1").switch_held());
    f.write_target(0o644);
    let root = f.root.display().to_string();
    let mut child = {
        use std::os::unix::process::CommandExt;
        f.driver(&["bootstrap", &root])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    f.wait_build_started(); // here: switch-to-configuration has started
                            // SIGKILL to the whole group, as systemd does to the unit's cgroup.
    let pgid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL).unwrap();
    child.wait().unwrap();

    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(st.phase, Phase::Switch);
    assert!(!f.marker().exists());
    let v1 = f
        .profile_target()
        .expect("the profile was set before the switch");
    assert!(f.switches().is_empty());

    f.release_build();
    let report = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    assert!(
        matches!(report, BootstrapReport::Completed { ref store_path, .. } if store_path.as_str() == v1)
    );
    assert_eq!(f.switches(), ["v1 switch"]);
    // The profile already pointed at it: no second generation.
    assert_eq!(
        std::fs::read_link(f.profile()).unwrap().to_str(),
        Some("system-1-link")
    );
    assert!(!f.root.join("nix/var/nix/profiles/system-2-link").exists());
    assert!(f.marker().exists());
}

#[test]
fn refuses_what_it_cannot_follow_with_a_usage_error() {
    common::require_nix();
    let f = Fixture::new();
    let runner = f.runner();
    // Not a flake reference the Machine API accepts: located message.
    f.write_target_text("# cloud-init\ngit+https://example.org/fleet\n", 0o644);
    let err = bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert!(
        err.to_string()
            .starts_with(&format!("{}/etc/nix-flake-target:2:1: ", f.root.display())),
        "{err}"
    );
    // Valid, but a tarball has no Git head to follow.
    f.write_target_text("https://example.org/fleet.tar.gz#host\n", 0o644);
    let err = bootstrap(&f.bootstrap_opts(), &runner, &Cancel::new()).unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert!(err.to_string().contains("is not a Git flake"), "{err}");
    assert!(runner.started().is_empty(), "{:?}", runner.started());
    assert!(!f.marker().exists());
}

#[test]
fn logs_one_progress_line_per_attempt_while_waiting() {
    use std::io::BufRead;
    common::require_nix();
    let f = Fixture::new();
    f.write_target(0o644); // the repository does not exist yet
    let root = f.root.display().to_string();
    let mut child = f
        .driver(&["bootstrap", &root])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut attempts = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("waiting for flake remote") {
            attempts.push(line);
            if attempts.len() == 2 {
                break;
            }
        }
    }
    f.commit(&Gen::new("v1"));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{rest:?}");
    let url = format!("file://{}", f.repo.display());
    for (i, line) in attempts.iter().enumerate() {
        assert!(
            line.contains(&format!(
                "waiting for flake remote {url} (ref main): attempt {} failed: fatal: ",
                i + 1
            )),
            "{line}"
        );
        assert!(line.contains("; next try in "), "{line}");
        assert!(line.contains(" of 30m spent"), "{line}");
    }
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("remote {url} answered: main is at "))),
        "{rest:?}"
    );
}

#[test]
fn sigterm_mid_build_stops_and_a_rerun_completes() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1").held());
    f.write_target(0o644);
    let root = f.root.display().to_string();
    let child = f
        .driver(&["bootstrap", &root])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    f.wait_build_started();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(i32::from(exit::CANCELLED)));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("during phase build"),
        "{v}"
    );
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    assert_eq!(st.last_outcome, Some(Outcome::Cancelled));
    assert!(!f.marker().exists());
    assert!(f.profile_target().is_none());

    f.release_build();
    let report = bootstrap(&f.bootstrap_opts(), &f.runner(), &Cancel::new()).unwrap();
    assert!(matches!(report, BootstrapReport::Completed { .. }));
    assert_eq!(f.switches(), ["v1 switch"]);
}

/// The held build signals its start even when an earlier build, run as
/// another `nixbld` user, left the start file behind: which build user Nix
/// picks depends on what else is building, so a rerun after a kill got
/// "Permission denied" writing it when tests ran in parallel.
#[test]
fn a_held_build_signals_over_a_start_file_of_another_build_user() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1").held());
    f.write_target(0o644);
    // A start file as another build user leaves it: owned by nobody, 0644.
    std::fs::write(f.started_file(), "1\n").unwrap();
    std::os::unix::fs::chown(f.started_file(), Some(65534), Some(65534)).unwrap();
    let runner = f.runner();
    let opts = f.bootstrap_opts();
    std::thread::scope(|s| {
        let run = s.spawn(|| bootstrap(&opts, &runner, &Cancel::new()));
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(f.started_file()).is_ok_and(|t| t == "1\n")
            && !run.is_finished()
            && std::time::Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        f.release_build();
        let report = run.join().unwrap();
        assert!(
            matches!(report, Ok(BootstrapReport::Completed { .. })),
            "{report:?}"
        );
    });
    assert_ne!(std::fs::read_to_string(f.started_file()).unwrap(), "1\n");
}

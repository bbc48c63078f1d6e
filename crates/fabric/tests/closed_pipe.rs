//! A reader that stops early (`fabric validate machines/ | head`) closes
//! the pipe while fabric still writes. That is how Unix filters are used,
//! not an error: fabric must stop quietly, never panic.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs fabric with its stdout a pipe whose reader is already gone, and
/// returns its exit code and stderr. The write end is held by the child
/// alone, so every write it makes meets a closed pipe.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(repo())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_that_writes_stdout_stops_quietly_when_the_reader_is_gone() {
    let cases: [&[&str]; 5] = [
        &["render", "examples/machines/basic.yaml"],
        &["validate", "examples/machines"],
        &["validate", "-o", "json", "examples/machines"],
        &["validate", "crates/fabric/tests/closed_pipe.rs"],
        &[
            "compose",
            "example/xr.yaml",
            "--input",
            "example/composition.yaml",
            "--secret",
            "example/secret.yaml",
        ],
    ];
    for args in cases {
        let (code, stderr) = with_closed_stdout(args);
        assert!(
            !stderr.contains("panicked"),
            "fabric {args:?} panicked on a closed stdout:\n{stderr}"
        );
        assert_ne!(code, Some(101), "fabric {args:?}: {stderr}");
        assert!(code.is_some(), "fabric {args:?} died of a signal: {stderr}");
    }
}

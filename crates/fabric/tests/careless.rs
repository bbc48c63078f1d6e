//! Every command on the mistakes a careless user makes (issue 15): a typo,
//! a missing file, a directory, a binary file, the wrong Secret, an
//! existing file given as the output directory. For each it checks:
//!
//! - one line per problem;
//! - `FILE:LINE:COL` wherever the problem is inside a file (a file that is
//!   missing, a directory, or an output path has no line to name, so there
//!   the line starts with `FILE: `);
//! - run errors on stderr, stdout empty (`validate`'s report is stdout by
//!   design, its summary stderr);
//! - the exit status the README documents.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Run {
    status: i32,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn fabric(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let lines = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: lines(&out.stdout),
        stderr: lines(&out.stderr),
    }
}

/// A line `FILE:LINE:COL: ...` naming `file`.
fn located(line: &str, file: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{file}:")) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(l), Some(c), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok() && tail.starts_with(' ')
}

/// The files a careless user passes, in a directory of their own, so that
/// lines name them as typed.
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    let xr = std::fs::read_to_string(repo().join("example/xr.yaml")).unwrap();
    w("xr.yaml", xr.as_bytes());
    w(
        "typo.yaml",
        xr.replace("  hostname: web01\n", "  hostnme: web01\n")
            .as_bytes(),
    );
    w("binary.yaml", b"\x7fELF\x02\x01\x01\x00\x00\x00");
    w(
        "other.yaml",
        std::fs::read_to_string(repo().join("example/secret.yaml"))
            .unwrap()
            .replace("name: admin-keys", "name: other-keys")
            .as_bytes(),
    );
    std::fs::create_dir(dir.path().join("machines")).unwrap();
    w(
        "machines/dns01.yaml",
        &std::fs::read(repo().join("examples/machines/dns01.yaml")).unwrap(),
    );
    w(
        "composition.yaml",
        &std::fs::read(repo().join("example/composition.yaml")).unwrap(),
    );
    w("a-file", b"");
    dir
}

/// Checks one run: its status, its stdout (`report`: lines allowed there),
/// and that every problem line is one line naming `file` as it should.
fn check(run: &Run, what: &str, status: i32, file: &str, positioned: bool, problems: usize) {
    assert_eq!(
        run.status, status,
        "{what}: status\nstdout: {:#?}\nstderr: {:#?}",
        run.stdout, run.stderr
    );
    let lines: Vec<&String> = if what.starts_with("validate") {
        run.stdout.iter().collect()
    } else {
        assert!(
            run.stdout.is_empty(),
            "{what}: a run error went to stdout: {:#?}",
            run.stdout
        );
        run.stderr
            .iter()
            .filter(|l| !l.starts_with("warning: fabric"))
            .collect()
    };
    assert_eq!(
        lines.len(),
        problems,
        "{what}: one line per problem: {lines:#?}"
    );
    for l in lines {
        if positioned {
            assert!(located(l, file), "{what}: not {file}:LINE:COL: {l}");
        } else {
            assert!(
                l.starts_with(&format!("{file}: ")),
                "{what}: not {file}: ...: {l}"
            );
        }
    }
}

#[test]
fn every_command_on_every_careless_input() {
    let dir = inputs();
    let d = dir.path();
    let comp = ["--input", "composition.yaml"];
    // (command line, status, file named, positioned, problems)
    let cases: Vec<(Vec<&str>, i32, &str, bool, usize)> = vec![
        // A typo: one error, at the misspelt key.
        (vec!["validate", "typo.yaml"], 1, "typo.yaml", true, 1),
        (vec!["render", "typo.yaml"], 1, "typo.yaml", true, 1),
        (
            vec!["seed", "typo.yaml", "--iso", "x.iso"],
            1,
            "typo.yaml",
            true,
            1,
        ),
        (
            [&["compose", "typo.yaml"][..], &comp[..]].concat(),
            1,
            "typo.yaml",
            true,
            1,
        ),
        // A missing file.
        (vec!["validate", "nope.yaml"], 2, "nope.yaml", false, 1),
        (vec!["render", "nope.yaml"], 2, "nope.yaml", false, 1),
        (
            vec!["seed", "nope.yaml", "--iso", "x.iso"],
            2,
            "nope.yaml",
            false,
            1,
        ),
        (vec!["compose", "nope.yaml"], 2, "nope.yaml", false, 1),
        (
            vec!["render", "xr.yaml", "--secret", "nope.yaml"],
            2,
            "nope.yaml",
            false,
            1,
        ),
        (
            [
                &["compose", "xr.yaml", "--secret", "nope.yaml"][..],
                &comp[..],
            ]
            .concat(),
            2,
            "nope.yaml",
            false,
            1,
        ),
        // A directory where a file is wanted.
        (vec!["render", "machines"], 2, "machines", false, 1),
        (
            vec!["seed", "machines", "--iso", "x.iso"],
            2,
            "machines",
            false,
            1,
        ),
        (vec!["compose", "machines"], 2, "machines", false, 1),
        // A binary file.
        (vec!["validate", "binary.yaml"], 2, "binary.yaml", true, 1),
        (vec!["render", "binary.yaml"], 2, "binary.yaml", true, 1),
        (
            vec!["seed", "binary.yaml", "--iso", "x.iso"],
            2,
            "binary.yaml",
            true,
            1,
        ),
        (vec!["compose", "binary.yaml"], 2, "binary.yaml", true, 1),
        (
            [
                &["compose", "xr.yaml", "--observed", "binary.yaml"][..],
                &comp[..],
            ]
            .concat(),
            2,
            "binary.yaml",
            true,
            1,
        ),
        // The wrong Secret: render and seed refuse it, at the Secret's name.
        (
            vec!["render", "xr.yaml", "--secret", "other.yaml"],
            2,
            "other.yaml",
            true,
            1,
        ),
        (
            vec![
                "seed",
                "xr.yaml",
                "--secret",
                "other.yaml",
                "--iso",
                "x.iso",
            ],
            2,
            "other.yaml",
            true,
            1,
        ),
        // An existing file as the output directory, or as the image's.
        (
            vec![
                "render",
                "xr.yaml",
                "--secret",
                "other.yaml",
                "--dir",
                "a-file",
            ],
            2,
            "other.yaml",
            true,
            1,
        ),
        (
            vec!["render", "machines/dns01.yaml", "--dir", "a-file"],
            2,
            "a-file",
            false,
            1,
        ),
        (
            vec!["seed", "machines/dns01.yaml", "--iso", "a-file/x.iso"],
            2,
            "a-file/x.iso",
            false,
            1,
        ),
        (
            vec!["seed", "machines/dns01.yaml", "--iso", "machines"],
            2,
            "machines",
            false,
            1,
        ),
    ];
    for (args, status, file, positioned, problems) in &cases {
        let run = fabric(d, args);
        check(&run, &args.join(" "), *status, file, *positioned, *problems);
    }
    assert!(!d.join("x.iso").exists(), "a refused seed wrote its image");

    // compose with the wrong Secret waits, as the cluster would, and names
    // the file that does not hold the machine's Secret, at its name.
    let run = fabric(
        d,
        &[
            &["compose", "xr.yaml", "--secret", "other.yaml"][..],
            &comp[..],
        ]
        .concat(),
    );
    assert_eq!(run.status, 0);
    assert!(run.stdout.is_empty(), "{:#?}", run.stdout);
    assert!(
        run.stderr.iter().any(|l| located(l, "other.yaml")
            && l.contains("needs Secret default/admin-keys, but this file holds only Secret default/other-keys")),
        "{:#?}",
        run.stderr
    );
    assert!(run.stderr.iter().any(|l| l.contains("WaitingForKeys")));
}

#[test]
fn validate_counts_what_it_read_and_found_and_names_what_it_could_not() {
    let dir = inputs();
    let d = dir.path();
    let run = fabric(d, &["validate", "typo.yaml"]);
    assert_eq!(
        run.stderr,
        ["1 machine checked in 1 file: 1 invalid, 1 error"]
    );
    let run = fabric(
        d,
        &[
            "validate",
            "xr.yaml",
            "typo.yaml",
            "nope.yaml",
            "-o",
            "json",
        ],
    );
    assert_eq!(run.status, 2);
    let v: serde_json::Value = serde_json::from_str(&run.stdout.join("\n")).unwrap();
    assert_eq!(v["files"], 3);
    assert_eq!(v["filesRead"], 2);
    assert_eq!(v["machines"], 2);
    assert_eq!(v["invalidMachines"], 1);
    assert_eq!(v["unreadable"], serde_json::json!(["nope.yaml"]));
    let run = fabric(d, &["validate", "binary.yaml"]);
    assert_eq!(
        run.stderr,
        ["0 machines checked in 0 of 1 file: 1 error; could not read 1: binary.yaml"]
    );
}

#[test]
fn small_ones() {
    let dir = inputs();
    let d = dir.path();
    // `fabric help --help` is help, not a usage error.
    let run = fabric(d, &["help", "--help"]);
    assert_eq!(run.status, 0, "{:#?}", run.stderr);
    assert!(run.stdout.iter().any(|l| l.starts_with("Usage: fabric")));
    // An anchor is valid YAML that Fabric refuses: the hint says why and
    // what to write instead.
    std::fs::write(d.join("anchor.yaml"), "a: &x 1\nb: *x\n").unwrap();
    let run = fabric(d, &["validate", "anchor.yaml"]);
    assert_eq!(run.status, 2);
    assert_eq!(
        run.stdout,
        ["anchor.yaml:1:7: anchors (&name) are valid YAML, but Fabric does not accept them in manifests (an alias can make a small file expand without bound, and the cluster stores the expanded object anyway: write the value out in full where the alias was used)"]
    );
    // Git's scp-like address gets the URL Nix reads.
    let xr = std::fs::read_to_string(d.join("xr.yaml")).unwrap();
    std::fs::write(
        d.join("scp.yaml"),
        xr.replace(
            "git+https://github.com/kubelize/fleet#web01",
            "git@github.com:org/fleet#web01",
        ),
    )
    .unwrap();
    let run = fabric(d, &["validate", "scp.yaml"]);
    assert!(
        run.stdout[0].ends_with("(write it as a URL: git+ssh://git@github.com/org/fleet#web01)"),
        "{:#?}",
        run.stdout
    );
    // The old flag names still work, and say what replaces them.
    let run = fabric(d, &["seed", "machines/dns01.yaml", "-o", "old.iso"]);
    assert_eq!(run.status, 0, "{:#?}", run.stderr);
    assert!(
        run.stderr[0].contains("deprecated; use --iso FILE"),
        "{:#?}",
        run.stderr
    );
    let run = fabric(d, &["render", "machines/dns01.yaml", "--out", "old"]);
    assert_eq!(run.status, 0, "{:#?}", run.stderr);
    assert!(
        run.stderr[0].contains("deprecated; use --dir DIR"),
        "{:#?}",
        run.stderr
    );
    assert!(d.join("old/user-data").exists() && d.join("old.iso").exists());
    // A missing parent of the image is created, like render's directory.
    let run = fabric(
        d,
        &["seed", "machines/dns01.yaml", "--iso", "new/dir/x.iso"],
    );
    assert_eq!(run.status, 0, "{:#?}", run.stderr);
    // An observed resource without its annotation: "an EnvironmentFile".
    std::fs::write(
        d.join("observed.yaml"),
        "apiVersion: v1alpha1\nkind: EnvironmentFile\nmetadata: {name: x}\n",
    )
    .unwrap();
    let run = fabric(d, &["compose", "xr.yaml", "--observed", "observed.yaml"]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr[0].contains(": an EnvironmentFile has no "),
        "{:#?}",
        run.stderr
    );
}

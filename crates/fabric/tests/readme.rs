//! The README's examples are run, so they cannot drift from the binary.
//!
//! Every ```console block whose commands are `fabric validate`, `render`,
//! `seed` or `compose` is run from the repository's root. A block is
//! `$ fabric ...` lines (a trailing `\` continues one; `# exit status N`
//! after a command says its status, 0 otherwise; other `# ...` comments are
//! ignored), each followed by the output it prints: stdout, then stderr.
//! In the output, a line `...` stands for any number of lines, and a line
//! ending in ` ...` for any line that starts with what comes before it.
//! Files a command writes go to a temporary directory (`$TMP`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

const COMMANDS: [&str; 4] = ["validate", "render", "seed", "compose"];

/// One command of a block and the output the README shows for it.
struct Example {
    line: usize,
    args: Vec<String>,
    status: i32,
    output: Vec<String>,
}

fn console_blocks(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```console" => current = Some((i + 2, Vec::new())),
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some((_, lines)) => lines.push(line.to_string()),
            None => {}
        }
    }
    blocks
}

fn examples(text: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    for (start, lines) in console_blocks(text) {
        let mut i = 0;
        while i < lines.len() {
            let line = &lines[i];
            let Some(cmd) = line.strip_prefix("$ ") else {
                if let Some(last) = out.last_mut().filter(|e| e.line >= start) {
                    last.output.push(line.clone());
                }
                i += 1;
                continue;
            };
            let first = start + i;
            let mut cmd = cmd.to_string();
            while cmd.trim_end().ends_with('\\') && i + 1 < lines.len() {
                cmd = format!(
                    "{} {}",
                    cmd.trim_end().trim_end_matches('\\'),
                    lines[i + 1].trim()
                );
                i += 1;
            }
            i += 1;
            let (cmd, comment) = match cmd.split_once(" #") {
                Some((c, comment)) => (c.to_string(), comment.trim().to_string()),
                None => (cmd, String::new()),
            };
            let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
            if words.first().map(String::as_str) != Some("fabric")
                || !words.get(1).is_some_and(|w| COMMANDS.contains(&w.as_str()))
            {
                continue;
            }
            let status = comment
                .strip_prefix("exit status ")
                .map(|n| n.parse().expect("a number after 'exit status'"))
                .unwrap_or(0);
            out.push(Example {
                line: first,
                args: words[1..].to_vec(),
                status,
                output: Vec::new(),
            });
        }
    }
    out
}

/// True when `got` is what the README shows, with its `...` wildcards.
fn matches(want: &[String], got: &[&str]) -> bool {
    match want.split_first() {
        None => got.is_empty(),
        Some((w, rest)) if w.trim() == "..." => {
            (0..=got.len()).any(|skip| matches(rest, &got[skip..]))
        }
        Some((w, rest)) => {
            let Some((g, got_rest)) = got.split_first() else {
                return false;
            };
            let line_ok = match w.strip_suffix(" ...") {
                Some(prefix) => g.starts_with(prefix),
                None => w == g,
            };
            line_ok && matches(rest, got_rest)
        }
    }
}

#[test]
fn the_readme_examples_print_what_the_readme_shows() {
    let text = readme();
    let all = examples(&text);
    for cmd in COMMANDS {
        assert!(
            all.iter().any(|e| e.args[0] == cmd),
            "the README shows no `fabric {cmd}` example block"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    for e in &all {
        let args: Vec<String> = e
            .args
            .iter()
            .map(|a| a.replace("$TMP", tmp.path().to_str().unwrap()))
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
            .current_dir(repo())
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let printed = format!("{stdout}{stderr}").replace(tmp.path().to_str().unwrap(), "$TMP");
        let got: Vec<&str> = printed.lines().collect();
        assert_eq!(
            out.status.code(),
            Some(e.status),
            "README.md:{}: fabric {}\n{printed}",
            e.line,
            e.args.join(" ")
        );
        assert!(
            matches(&e.output, &got),
            "README.md:{}: fabric {} printed\n{printed}\nbut the README shows\n{}",
            e.line,
            e.args.join(" "),
            e.output.join("\n")
        );
    }
}

/// The line `validate --help` gives as an example, the README's, and what
/// validate prints for that mistake are one and the same.
#[test]
fn the_validate_example_line_is_the_same_everywhere() {
    let help = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["validate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // clap wraps long lines; the example is one line.
    let unwrapped = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = unwrapped
        .find("dns01.yaml:")
        .expect("validate --help shows a problem");
    let end = unwrapped[start..].find("cidr)").unwrap() + start + "cidr)".len();
    let from_help = &unwrapped[start..end];

    let dir = tempfile::tempdir().unwrap();
    let dns01 = std::fs::read_to_string(repo().join("examples/machines/dns01.yaml")).unwrap();
    std::fs::write(
        dir.path().join("dns01.yaml"),
        dns01.replace("gateway: 10.0.1.1", "gateway: 10.0.2.1"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(dir.path())
        .args(["validate", "dns01.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), from_help);
    assert!(
        readme().lines().any(|l| l == from_help),
        "the README does not show {from_help:?}"
    );
}

#[test]
fn the_wildcards_match_what_they_say() {
    let w = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(matches(&w(&["a", "...", "d"]), &["a", "b", "c", "d"]));
    assert!(matches(&w(&["a", "...", "d"]), &["a", "d"]));
    assert!(!matches(&w(&["a", "...", "d"]), &["a", "b"]));
    assert!(matches(&w(&["status: x ..."]), &["status: x y z"]));
    assert!(!matches(&w(&["a"]), &["a", "b"]));
}

//! The one exit-status rule every `fabric` command follows, and the
//! reading of input files that decides between its first two failures.
//!
//! - 0: done (for `validate`: every machine valid, warnings allowed).
//! - 1: the input was read and is wrong (invalid YAML, an invalid field, a
//!   fleet conflict, a Fatal result), or the work itself failed (a build, an
//!   activation, a port in use, unwritable state).
//! - 2: the command could not start, or its result has nowhere to go: a bad
//!   flag or flag value, an input that cannot be used at all (it does not
//!   exist, cannot be read, is over the manifest size limit, is not UTF-8
//!   text, or holds no manifest of the
//!   kind the command takes: no Machine, no Input; `validate --allow-empty`
//!   lifts this for an empty set), a `--root` that is not a directory, or
//!   an output file that cannot be written. clap's usage errors exit 2 too.
//! - 3, 4, 143: `bootstrap` and `agent --once` only (lock busy, rollback
//!   failed too, stopped by a signal), from `fabric_converge::layout::exit`.
//!
//! 2 is "fix how fabric was called", 1 is "fix the content or the machine";
//! the NixOS units never restart on 2 (`RestartPreventExitStatus`), so a
//! failure that a retry can cure (a busy port) must be 1.

use std::path::Path;
use std::process::ExitCode;

use fabric_converge::layout;
use fabric_model::source::{self, Node, TextError};
use fabric_model::Diagnostic;

pub const OK: u8 = layout::exit::OK;
pub const FAILED: u8 = layout::exit::FAILED;
pub const USAGE: u8 = layout::exit::USAGE;

// The converge engine's codes are the CLI's codes: the units' restart policy
// and the README's table rely on them being the same numbers.
const _: () = assert!(OK == 0 && FAILED == 1 && USAGE == 2);

/// The rule, for `fabric --help`.
pub const RULE: &str = "Exit status, for every command:\n  \
0    done\n  \
1    the input was read and is wrong, or the work failed\n  \
2    a bad flag or flag value, or an input that cannot be used at all (missing, unreadable,\n       \
over 4 MiB, not UTF-8 text, holding no Machine), or an output that cannot be written\n  \
3, 4, 143  bootstrap and agent only: lock busy, rollback failed too, stopped by a signal\n\
Each command's --help says what each status means for it.";

/// Stops a command with a status and the lines that say why.
#[derive(Debug)]
pub struct Stop {
    pub code: u8,
    pub lines: Vec<String>,
}

impl Stop {
    /// An input that cannot be used at all, or a bad flag value (2).
    pub fn usage(line: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            lines: vec![line.into()],
        }
    }

    /// Content that was read and is wrong, or work that failed (1).
    pub fn failed(lines: Vec<String>) -> Self {
        Self {
            code: FAILED,
            lines,
        }
    }

    /// Prints the lines on stderr and gives the status.
    pub fn report(self) -> ExitCode {
        for l in &self.lines {
            eprintln!("{l}");
        }
        ExitCode::from(self.code)
    }
}

/// A path that cannot be a manifest at all (exit 2), and why, in the form
/// of every other problem: `FILE[:LINE:COL]: what (what to do)`.
#[derive(Debug)]
pub struct Unusable {
    pub file: String,
    pub diagnostic: Diagnostic,
}

impl Unusable {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            diagnostic: Diagnostic::error("", None, message),
        }
    }

    fn text(file: &Path, e: &TextError) -> Self {
        Self {
            file: file.display().to_string(),
            diagnostic: Diagnostic::error("", e.pos(), e.to_string()).hint(e.hint()),
        }
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.diagnostic.located(&self.file))
    }
}

impl From<Unusable> for Stop {
    fn from(u: Unusable) -> Self {
        Stop::usage(u.to_string())
    }
}

/// Reads a manifest file as text, or says why it cannot be one (exit 2):
/// it cannot be read, it is larger than any manifest
/// ([`source::MAX_MANIFEST_BYTES`], checked before reading), it is not
/// UTF-8, or it holds a NUL byte (a binary file). The model's own check
/// gives the byte offset and line:column, so a stray byte can be found.
pub fn read_text(path: &Path) -> Result<String, Unusable> {
    let cannot_read =
        |e: std::io::Error| Unusable::new(path.display().to_string(), format!("cannot read: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if meta.is_dir() {
        return Err(Unusable {
            file: path.display().to_string(),
            diagnostic: Diagnostic::error("", None, "is a directory, not a manifest file")
                .hint("name one manifest file; `fabric validate DIR` checks every manifest in a directory"),
        });
    }
    let size = meta.len();
    source::check_manifest_size(size).map_err(|e| Unusable::text(path, &e))?;
    let bytes = std::fs::read(path).map_err(cannot_read)?;
    match source::manifest_text(&bytes) {
        Ok(_) => {}
        Err(e) => return Err(Unusable::text(path, &e)),
    }
    // manifest_text checked it: this cannot fail, and costs no copy.
    String::from_utf8(bytes)
        .map_err(|e| Unusable::new(path.display().to_string(), format!("not UTF-8 text: {e}")))
}

/// Reads a YAML file every command reads the same way: as text
/// ([`read_text`]), then as YAML by the model's one reader. A file that is
/// not YAML (a syntax error, an anchor) cannot be used at all (exit 2), and
/// says where: `FILE:LINE:COL: invalid YAML: what (what to do)`.
pub fn read_yaml(path: &Path) -> Result<Vec<Node>, Unusable> {
    let text = read_text(path)?;
    source::parse_yaml(&text).map_err(|e| Unusable {
        file: path.display().to_string(),
        diagnostic: fabric_model::machine::syntax_diagnostic(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_name_the_byte_and_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"kind: Machine\nname: caf\xe9\n").unwrap();
        let e = Stop::from(read_text(&latin1).unwrap_err());
        assert_eq!(e.code, USAGE);
        assert!(
            e.lines[0].ends_with(
                "latin1.yaml:2:10: not UTF-8 text: byte 0xe9 at byte offset 23 (save the manifest as UTF-8)"
            ),
            "{:?}",
            e.lines
        );
        let binary = dir.path().join("bin.yaml");
        std::fs::write(&binary, b"ELF\x00\x01").unwrap();
        let e = read_text(&binary).unwrap_err().to_string();
        assert!(
            e.contains("bin.yaml:1:4: a NUL byte at byte offset 3"),
            "{e}"
        );
        let e = read_text(dir.path()).unwrap_err().to_string();
        assert!(e.contains(": is a directory, not a manifest file (name one manifest file; `fabric validate DIR`"), "{e}");
        let big = dir.path().join("big.yaml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(source::MAX_MANIFEST_BYTES as u64 + 1).unwrap();
        let e = read_text(&big).unwrap_err().to_string();
        assert!(e.contains("more than the 4 MiB a manifest may have"), "{e}");
        std::fs::write(&binary, "kind: Machine\n").unwrap();
        assert_eq!(read_text(&binary).unwrap(), "kind: Machine\n");
    }
}

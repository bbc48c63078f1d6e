//! Writing result files so that a reader never sees half of one: a temp
//! file in the same directory, fsync, rename, fsync of the directory.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".fabric-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a result file the user named: its directory is created when
/// missing, and an error names that file (never the temporary one beside
/// it) and what would work instead.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    if path.is_dir() {
        return Err(format!(
            "{shown}: cannot write: is a directory (name the image file, e.g. {})",
            path.join("seed.iso").display()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "{shown}: cannot create its directory {}: {e}",
                dir.display()
            )
        })?;
    }
    write_atomic(path, bytes, 0o644).map_err(|e| format!("{shown}: cannot write: {e}"))
}

/// Makes sure `dir` is a directory to write into, creating it if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{}: cannot write: exists and is not a directory (--dir takes a directory, created if missing)",
            dir.display()
        )),
        Err(_) => std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display())),
    }
}

/// Writes a command's result to stdout. A reader that stopped early
/// (`fabric validate ... | head`) is not an error: the rest is dropped, as
/// every Unix filter does, where `print!` would panic on the closed pipe.
pub fn to_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

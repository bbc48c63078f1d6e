//! Reading Machine manifests from files, and reporting their problems the
//! same way in every command: `FILE:LINE:COL: FIELD.PATH: what (what instead)`.

use std::path::{Path, PathBuf};

use fabric_model::{machine, Diagnostic, Machine, Parsed};

/// A file's machines and problems.
pub struct Loaded {
    /// The file as the user named it (or as found under a named directory).
    pub file: String,
    /// Valid machines in document order.
    pub machines: Vec<Machine>,
    /// Errors and warnings, in document order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and checks every document of one file.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = read(path)?;
    Ok(collect(
        path.display().to_string(),
        machine::parse_stream(&text),
    ))
}

/// Reads and checks many files, parsing them in parallel.
pub fn load_many(paths: &[PathBuf]) -> Result<Vec<Loaded>, String> {
    let texts = paths
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths
        .iter()
        .zip(machine::parse_many(&texts))
        .map(|(p, docs)| collect(p.display().to_string(), docs))
        .collect())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn collect(file: String, docs: Vec<Parsed>) -> Loaded {
    let mut loaded = Loaded {
        file,
        machines: Vec::new(),
        diagnostics: Vec::new(),
    };
    for doc in docs {
        match doc {
            Parsed::Machine(m) => {
                loaded.diagnostics.extend(m.warnings.iter().cloned());
                loaded.machines.push(*m);
            }
            Parsed::Invalid(diags) => loaded.diagnostics.extend(diags),
            // Secrets, Compositions and the like sit beside machines in Git.
            Parsed::NotAMachine { .. } => {}
        }
    }
    loaded
}

/// Reads exactly one valid machine, or returns every diagnostic rendered
/// with the file name (warnings included, errors first).
pub fn load_one(path: &Path) -> Result<(Machine, Vec<String>), Vec<String>> {
    let loaded = load(path).map_err(|e| vec![e])?;
    let rendered: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.located(&loaded.file))
        .collect();
    if loaded.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(rendered);
    }
    let mut machines = loaded.machines;
    match machines.len() {
        1 => Ok((machines.remove(0), rendered)),
        0 => Err(vec![format!(
            "{}: no Machine manifest in this file (expected apiVersion: {} and kind: Machine)",
            loaded.file,
            fabric_model::api::API_VERSION
        )]),
        n => Err(vec![format!(
            "{}: {n} Machines in one file (give this command one machine per file)",
            loaded.file
        )]),
    }
}

/// Expands files and directories into the YAML files to read, sorted so
/// that reports come out in the same order every time.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>, String> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| format!("{}: {e}", p.display()))?;
            found.sort();
            out.extend(found.into_iter().map(|f| (f, false)));
        } else {
            out.push((p.clone(), true));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            // Hidden directories (.git) hold no manifests worth reading.
            if !entry.file_name().to_string_lossy().starts_with('.') {
                walk(&path, out)?;
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

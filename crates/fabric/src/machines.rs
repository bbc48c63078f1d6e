//! Reading Machine manifests from files, and reporting their problems the
//! same way in every command: `FILE:LINE:COL: FIELD.PATH: what (what instead)`.

use std::path::{Path, PathBuf};

use fabric_model::{machine, Diagnostic, Machine, Parsed};

use crate::exit::{read_text, Stop, Unusable};

/// A file's machines and problems.
pub struct Loaded {
    /// The file as the user named it (or as found under a named directory).
    pub file: String,
    /// Valid machines in document order.
    pub machines: Vec<Machine>,
    /// Errors and warnings, in document order.
    pub diagnostics: Vec<Diagnostic>,
    /// Machine manifests found invalid.
    pub invalid: usize,
}

/// Reads and checks every document of one file. A file that is not YAML
/// cannot be used at all (exit 2).
pub fn load(path: &Path) -> Result<Loaded, Stop> {
    let text = read_text(path)?;
    let file = path.display().to_string();
    match machine::read_stream(&text) {
        Ok(docs) => Ok(collect(file, docs)),
        Err(diagnostic) => Err(Unusable { file, diagnostic }.into()),
    }
}

/// Checks many files already read, parsing them in parallel. A file that is
/// not YAML is unusable, as in [`load`].
pub fn check_many(files: &[(PathBuf, String)]) -> Vec<Result<Loaded, Unusable>> {
    let texts: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
    files
        .iter()
        .zip(machine::read_many(&texts))
        .map(|((p, _), docs)| {
            let file = p.display().to_string();
            match docs {
                Ok(docs) => Ok(collect(file, docs)),
                Err(diagnostic) => Err(Unusable { file, diagnostic }),
            }
        })
        .collect()
}

fn collect(file: String, docs: Vec<Parsed>) -> Loaded {
    let mut loaded = Loaded {
        file,
        machines: Vec::new(),
        diagnostics: Vec::new(),
        invalid: 0,
    };
    for doc in docs {
        match doc {
            Parsed::Machine(m) => {
                loaded.diagnostics.extend(m.warnings.iter().cloned());
                loaded.machines.push(*m);
            }
            Parsed::Invalid(diags) => {
                loaded.invalid += 1;
                loaded.diagnostics.extend(diags);
            }
            // Secrets, Compositions and the like sit beside machines in Git.
            Parsed::NotAMachine { .. } => {}
        }
    }
    loaded
}

/// Reads exactly one valid machine, or returns every diagnostic rendered
/// with the file name (warnings included, errors first).
pub fn load_one(path: &Path) -> Result<(Machine, Vec<String>), Stop> {
    let loaded = load(path)?;
    let rendered: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| d.located(&loaded.file))
        .collect();
    if loaded.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(Stop::failed(rendered));
    }
    let mut machines = loaded.machines;
    match machines.len() {
        1 => Ok((machines.remove(0), rendered)),
        0 => Err(Stop::usage(format!(
            "{}: no Machine manifest in this file (expected apiVersion: {} and kind: Machine)",
            loaded.file,
            fabric_model::api::API_VERSION
        ))),
        n => Err(Stop::failed(vec![format!(
            "{}: {n} Machines in one file (give this command one machine per file)",
            loaded.file
        )])),
    }
}

/// A path the user named, and the YAML files it stands for.
pub struct Named {
    pub path: PathBuf,
    /// A directory (searched), not a file (taken as it is).
    pub dir: bool,
    /// The files to read, sorted so that reports come out in the same
    /// order every time; or why the path cannot be used.
    pub files: Result<Vec<PathBuf>, Unusable>,
}

/// Expands each named file or directory into the YAML files to read.
pub fn expand(paths: &[PathBuf]) -> Vec<Named> {
    paths
        .iter()
        .map(|p| {
            let unusable = |e: std::io::Error| {
                Unusable::new(p.display().to_string(), format!("cannot read: {e}"))
            };
            let dir = p.is_dir();
            let files = if dir {
                let mut found = Vec::new();
                walk(p, &mut found).map(|()| {
                    found.sort();
                    found
                })
            } else {
                std::fs::metadata(p).map(|_| vec![p.clone()])
            };
            Named {
                path: p.clone(),
                dir,
                files: files.map_err(unusable),
            }
        })
        .collect()
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

//! Reads the manifest files and directories named on the command line or in the agent's flags.

use imdsguard_manifest::Source;
use std::path::{Path, PathBuf};

/// A path that could not be read, and why (the cause is its `source()`, which anyhow's `{:#}`
/// prints after it).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SourceError {
    what: String,
    #[source]
    source: std::io::Error,
}

fn err(what: String) -> impl FnOnce(std::io::Error) -> SourceError {
    move |source| SourceError { what, source }
}

/// Every `*.yaml`, `*.yml` and `*.json` file under the given paths (directories recursively, in
/// name order); a file named explicitly is read whatever its extension. `-` reads standard input.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Source>, SourceError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, true, &mut files)?;
    }
    files
        .into_iter()
        .map(|f| {
            if f.as_os_str() == "-" {
                let text = std::io::read_to_string(std::io::stdin())
                    .map_err(err("reading standard input".into()))?;
                return Ok(Source::new("<stdin>", text));
            }
            let text =
                std::fs::read_to_string(&f).map_err(err(format!("reading {}", f.display())))?;
            Ok(Source::new(f.display().to_string(), text))
        })
        .collect()
}

fn collect(p: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    if p.as_os_str() == "-" {
        out.push(p.to_owned());
        return Ok(());
    }
    let meta = std::fs::metadata(p).map_err(err(format!(
        "{}: cannot read (does the path exist?)",
        p.display()
    )))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
            .map_err(err(format!("listing {}", p.display())))?;
        entries.sort();
        for e in entries {
            collect(&e, false, out)?;
        }
    } else if explicit
        || matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
    {
        out.push(p.to_owned());
    }
    Ok(())
}

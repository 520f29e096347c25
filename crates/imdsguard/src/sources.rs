//! Reads the files and directories named on the command line.

use anyhow::{Context, Result};
use imdsguard_manifest::Source;
use std::path::{Path, PathBuf};

/// Every `*.yaml`, `*.yml` and `*.json` file under the given paths (directories recursively, in
/// name order); a file named explicitly is read whatever its extension. `-` reads standard input.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Source>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, true, &mut files)?;
    }
    files
        .into_iter()
        .map(|f| {
            if f.as_os_str() == "-" {
                let text =
                    std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
                return Ok(Source::new("<stdin>", text));
            }
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok(Source::new(f.display().to_string(), text))
        })
        .collect()
}

fn collect(p: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.as_os_str() == "-" {
        out.push(p.to_owned());
        return Ok(());
    }
    let meta = std::fs::metadata(p)
        .with_context(|| format!("{}: cannot read (does the path exist?)", p.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("listing {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
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

//! Records the git commit the binary is built from, for `imdsguard version`: IMDSGUARD_COMMIT
//! when set (a build without .git, such as the Dockerfile's), else `git rev-parse --short HEAD`,
//! else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=IMDSGUARD_COMMIT");
    let commit = std::env::var("IMDSGUARD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMDSGUARD_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // Build again when HEAD moves: HEAD itself (a checkout), the branch it names (a commit) and
    // packed-refs (where `git gc` moves the branch). Only files that exist: cargo reruns a
    // build script on every build while a path it was given is missing.
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").ok()?).to_owned();
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        // Relative to the crate's directory, where git ran.
        if let Some(path) = git(&["rev-parse", "--git-path", &name]).map(|p| dir.join(p))
            && path.exists()
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

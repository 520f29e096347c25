//! The inotify watch over the input files, and how long ago they last changed.

use super::Writing;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::warn;

/// Sets `touched` whenever a file under `paths` is completely written: closed after writing,
/// renamed into place, created or removed (a file's directory is watched: editors and config
/// management replace files by renaming). A file modified and not yet closed is recorded in
/// `writing`, so no reader takes it half-way through an in-place rewrite.
pub fn watch(
    paths: &[PathBuf],
    touched: Arc<AtomicBool>,
    writing: Option<Writing>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else {
            touched.store(true, Ordering::Relaxed);
            return;
        };
        let open = match ev.kind {
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => true,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Create(_)
            | EventKind::Remove(_) => false,
            _ => return,
        };
        if let Some(w) = &writing {
            for p in &ev.paths {
                w.mark(p, open);
            }
        }
        if !open {
            touched.store(true, Ordering::Relaxed);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(
                error = %e,
                "watching files: falling back to the --reload-interval check"
            );
            return None;
        }
    };
    for p in paths {
        let target = if p.is_dir() {
            p.as_path()
        } else {
            p.parent().unwrap_or(p.as_path())
        };
        if let Err(e) = w.watch(target, notify::RecursiveMode::Recursive) {
            warn!(
                error = %e,
                "watching {}: falling back to the --reload-interval check",
                target.display()
            );
        }
    }
    Some(w)
}

/// The time since the newest modification among `paths` (files, and files in directories).
pub fn newest_change(paths: &[PathBuf]) -> Option<Duration> {
    let mut newest = None;
    for p in paths {
        let mut files = vec![p.clone()];
        if p.is_dir() {
            files = std::fs::read_dir(p)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
        }
        for f in files {
            if let Ok(m) = std::fs::metadata(&f).and_then(|m| m.modified()) {
                newest = newest.max(Some(m));
            }
        }
    }
    newest?.elapsed().ok()
}

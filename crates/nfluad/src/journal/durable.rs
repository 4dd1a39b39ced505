//! Replacing a file so that a crash leaves the old or the new content, never
//! a mix — and saying, when it fails, which of the two is on disk.
//!
//! The steps: write `<path>.tmp`, fsync it, rename it over `<path>`, fsync
//! the directory. Until the rename, nothing a reader sees has changed; from
//! the rename on, a restart reads the new content, and only the directory
//! fsync is left to make it survive a power loss as well. A failure is told
//! as [`WriteFailure::NotWritten`] (the old content stands, the temporary
//! file is removed) or [`WriteFailure::NotSynced`] (the new one is in place).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary files; any left behind (a crash mid-write) are
/// removed by [`remove_temporaries`] on start.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// How far a failed [`write_durably`] got.
#[derive(Debug)]
pub(super) enum WriteFailure {
    /// Nothing changed: `path` holds what it held before.
    NotWritten(io::Error),
    /// `path` holds the new content; the directory was not synced, so a
    /// power loss (not a restart) may still bring the old one back.
    NotSynced(io::Error),
}

/// The steps of a write that can fail, named for fault injection in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Write,
    Rename,
    SyncDir,
}

#[cfg(test)]
thread_local! {
    /// The step the next write of this thread fails at (tests only).
    static FAIL_AT: std::cell::Cell<Option<Step>> = const { std::cell::Cell::new(None) };
}

/// Makes the next [`write_durably`] of this thread fail at `step`.
#[cfg(test)]
pub(super) fn fail_next_at(step: Step) {
    FAIL_AT.with(|f| f.set(Some(step)));
}

#[cfg(test)]
fn injected(step: Step) -> io::Result<()> {
    if FAIL_AT.with(|f| f.get()) == Some(step) {
        FAIL_AT.with(|f| f.set(None));
        return Err(io::Error::other(format!("injected failure at {step:?}")));
    }
    Ok(())
}

#[cfg(not(test))]
#[inline(always)]
fn injected(_: Step) -> io::Result<()> {
    Ok(())
}

/// Replaces `path` with `bytes` (see the module doc).
pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), WriteFailure> {
    let dir = path
        .parent()
        .ok_or_else(|| WriteFailure::NotWritten(io::Error::other("journal path has no directory")))?;
    let tmp = tmp_path(path);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()?;
        injected(Step::Write)
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(WriteFailure::NotWritten(e));
    }
    if let Err(e) = injected(Step::Rename).and_then(|()| fs::rename(&tmp, path)) {
        // A rename happens whole or not at all; the temporary file tells which.
        if tmp.exists() {
            let _ = fs::remove_file(&tmp);
            return Err(WriteFailure::NotWritten(e));
        }
        return Err(WriteFailure::NotSynced(e));
    }
    injected(Step::SyncDir).and_then(|()| File::open(dir)?.sync_all()).map_err(WriteFailure::NotSynced)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    PathBuf::from(tmp)
}

/// Removes the temporary files a crash mid-write left in `dir`; returns how
/// many. They never hold anything the manifest names.
pub(super) fn remove_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(TMP_SUFFIX))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

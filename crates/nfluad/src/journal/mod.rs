//! `--state-dir`: a durable record of what clients built — states, the
//! chunks they executed successfully, and hooks — replayed on start so a
//! restarted daemon serves the same filters (SPEC §8).
//!
//! Lua states cannot be serialised, so the journal keeps the recipe, not the
//! result: replaying the chunks in order rebuilds the globals they set.
//! Runtime changes made by callbacks, hooks and timers are not recorded.
//!
//! Layout of the directory:
//! - `journal`: the manifest, rewritten whole on every change by
//!   [`durable::write_durably`] (temporary file, fsync, rename, fsync of the
//!   directory), so a crash leaves either the old or the new manifest. Its
//!   first line is `nflua-journal 1 <crc32 of the rest>`; the rest is JSON.
//! - `chunks/<id>.lua`: one file per executed chunk, written the same way
//!   before the manifest names it, never changed afterwards. The manifest
//!   holds each chunk's length and CRC-32, so a damaged or missing file is
//!   found before its state is restored.
//! - `*.tmp`: a write in progress; any found on start are removed.
//!
//! What a failure costs:
//! - A damaged manifest stops the daemon with a clear error: nothing in it
//!   can be trusted, so nothing is restored.
//! - A damaged or missing chunk file, or a chunk that no longer replays
//!   (`assert(nf.time() < T)`), costs its own state only. That state is not
//!   served; it is logged at ERROR and listed in [`RestoreFailures`] (STATS
//!   and `nfluactl list`/`stats` show it with the reason), and so are its
//!   hooks, which are not restored either. Its entries stay in the manifest
//!   and its chunk files on disk, untouched by later changes, for
//!   inspection — and a later start tries it again. Its name stays taken: a
//!   CREATE of it is refused until a DESTROY of it discards the entries.
//!
//! What an answer promises: a change is applied first and recorded after.
//! "applied, but not journaled" ([`RecordError::NotJournaled`]) is said only
//! when the manifest on disk is still the previous one, and the in-memory
//! manifest is left as it was, so no later change carries the refused one to
//! disk. Once the rename has happened the change is in the journal; if only
//! the directory fsync failed, the answer says so ([`RecordError::NotSynced`]).

mod durable;
mod failed;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nflua_proto::hook::HookSpec;
use serde::{Deserialize, Serialize};

use durable::{remove_temporaries, write_durably, WriteFailure};
pub use failed::{FailedState, RestoreFailures};

const MANIFEST: &str = "journal";
const CHUNKS: &str = "chunks";
const MAGIC: &str = "nflua-journal";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "journal {path} is corrupt: {reason} (nothing was restored; move the directory away to start empty)"
    )]
    Corrupt { path: PathBuf, reason: ManifestError },
}

/// Why a manifest cannot be trusted (nothing of it is restored).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no header line")]
    NoHeader,
    #[error("header is not text")]
    HeaderNotText,
    #[error("header {0:?} does not start with {MAGIC:?}")]
    Magic(String),
    #[error("header {0:?}: unknown version (this nfluad writes {VERSION})")]
    Version(String),
    #[error("header has no checksum")]
    NoChecksum,
    #[error("checksum mismatch: the manifest was damaged")]
    Checksum,
    #[error("manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state {0:?} appears twice")]
    Duplicate(String),
    #[error("hook {0}: not hex")]
    HookNotHex(usize),
    #[error("hook {index}: {source}")]
    Hook { index: usize, source: nflua_proto::DecodeError },
    #[error("hook {index} names state {state:?}, which the journal does not hold")]
    HookState { index: usize, state: String },
}

/// Why one state's chunk files cannot be replayed (that state alone is put aside).
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {id} of state {state:?} ({}): {source}", path.display())]
    Read { id: u64, state: String, path: PathBuf, source: io::Error },
    #[error("chunk {id} of state {state:?} ({}) was damaged", path.display())]
    Damaged { id: u64, state: String, path: PathBuf },
}

/// Why a change was not (durably) recorded; the change itself took effect.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The journal on disk is as before the change.
    #[error("applied, but not journaled (lost on restart): {0}")]
    NotJournaled(io::Error),
    /// The change is in the journal, but not synced to disk.
    #[error("applied and journaled, but the journal could not be synced (a power loss may undo it): {0}")]
    NotSynced(io::Error),
    #[error("applied, but not journaled: state {0:?} is not in the journal")]
    UnknownState(String),
}

impl From<WriteFailure> for RecordError {
    fn from(f: WriteFailure) -> Self {
        match f {
            WriteFailure::NotWritten(e) => RecordError::NotJournaled(e),
            WriteFailure::NotSynced(e) => RecordError::NotSynced(e),
        }
    }
}

/// A state as created: the values CREATE ended up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    pub name: String,
    pub max_alloc: usize,
    pub max_runs: u32,
    pub debug: bool,
    pub chunks: Vec<ChunkEntry>,
}

/// One executed chunk; its text lives in `chunks/<id>.lua`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub id: u64,
    pub name: String,
    pub len: usize,
    pub crc32: u32,
    /// It raised an error when executed: the replay expects the same.
    #[serde(default)]
    pub failed: bool,
}

/// What the manifest holds. Hooks are kept as their HOOK_ADD record in hex:
/// the wire decoder then checks them exactly as it checks a client's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    next_chunk: u64,
    states: Vec<StateEntry>,
    hooks: Vec<String>,
}

/// A checked journal, ready to replay: chunk texts loaded, hooks decoded.
#[derive(Debug, Default)]
pub struct Restored {
    pub states: Vec<(StateEntry, Vec<Vec<u8>>)>,
    /// States whose chunk files failed the check, with the reason; their
    /// hooks are still in `hooks`.
    pub damaged: Vec<(String, String)>,
    pub hooks: Vec<HookSpec>,
}

pub struct Journal {
    dir: PathBuf,
    manifest: Manifest,
    failures: RestoreFailures,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and reads what it
    /// holds; temporary files of interrupted writes are removed first.
    /// States that fail to restore are to be reported to [`Journal::mark_failed`];
    /// `failures` is where they are listed.
    pub fn open(dir: &Path, failures: RestoreFailures) -> Result<(Journal, Restored), JournalError> {
        let chunks = dir.join(CHUNKS);
        fs::create_dir_all(&chunks).map_err(|e| io_error(&chunks, e))?;
        let removed = remove_temporaries(dir) + remove_temporaries(&chunks);
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed temporary files of interrupted journal writes");
        }
        let path = dir.join(MANIFEST);
        let (manifest, restored) = match fs::read(&path) {
            Ok(bytes) => load(dir, &bytes).map_err(|reason| JournalError::Corrupt { path, reason })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Manifest::default(), Restored::default()),
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok((Journal { dir: dir.to_owned(), manifest, failures }, restored))
    }

    /// The states that failed to restore (shared; see [`RestoreFailures`]).
    pub fn failures(&self) -> &RestoreFailures {
        &self.failures
    }

    /// Records that state `name` could not be restored: it is listed with
    /// `reason` and its journaled hooks, and its entries are kept as they are.
    pub fn mark_failed(&self, name: &str, reason: &str) {
        let hooks = self
            .manifest
            .hooks
            .iter()
            .filter_map(|hex| from_hex(hex).and_then(|r| HookSpec::parse(&r).ok()))
            .filter(|spec| spec.state == name)
            .map(|spec| format!("queues {}:{} function {}", spec.queue_first, spec.queue_last, spec.function))
            .collect();
        self.failures.add(FailedState { name: name.to_owned(), reason: reason.to_owned(), hooks });
    }

    /// Removes chunk files no state refers to (left by a crash between
    /// writing a chunk and the manifest, or by DESTROY).
    pub fn remove_orphans(&self) {
        let live: HashSet<String> =
            self.manifest.states.iter().flat_map(|s| &s.chunks).map(|c| chunk_file(c.id)).collect();
        let Ok(entries) = fs::read_dir(self.dir.join(CHUNKS)) else { return };
        for entry in entries.flatten() {
            if !live.contains(&entry.file_name().to_string_lossy().into_owned()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    pub fn record_create(
        &mut self,
        name: &str,
        max_alloc: usize,
        max_runs: u32,
        debug: bool,
    ) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        next.states.push(StateEntry {
            name: name.to_owned(),
            max_alloc,
            max_runs,
            debug,
            chunks: Vec::new(),
        });
        self.commit(next)
    }

    pub fn record_destroy(&mut self, name: &str) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        let Some(at) = next.states.iter().position(|s| s.name == name) else { return Ok(()) };
        let gone = next.states.remove(at);
        self.commit(next)?;
        for c in gone.chunks {
            let _ = fs::remove_file(self.chunk_path(c.id));
        }
        Ok(())
    }

    /// Discards what the journal holds of a state that failed to restore:
    /// its entry, its hooks and its chunk files. The name is free again.
    pub fn discard_failed(&mut self, name: &str) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        next.hooks.retain(|hex| {
            let spec = from_hex(hex).and_then(|r| HookSpec::parse(&r).ok());
            spec.is_none_or(|s| s.state != name)
        });
        let gone = next.states.iter().position(|s| s.name == name).map(|at| next.states.remove(at));
        let result = self.commit(next);
        if let Err(RecordError::NotJournaled(_)) = result {
            return result;
        }
        for c in gone.into_iter().flat_map(|s| s.chunks) {
            let _ = fs::remove_file(self.chunk_path(c.id));
        }
        self.failures.remove(name);
        result
    }

    pub fn record_execute(
        &mut self,
        state: &str,
        chunk_name: &str,
        body: &[u8],
        failed: bool,
    ) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        let Some(at) = next.states.iter().position(|s| s.name == state) else {
            return Err(RecordError::UnknownState(state.to_owned()));
        };
        let id = next.next_chunk;
        // Unsynced, the chunk file may be lost to a power loss while the
        // manifest names it: say so, even if the manifest is synced.
        let chunk_synced = match write_durably(&self.chunk_path(id), body) {
            Ok(()) => Ok(()),
            Err(WriteFailure::NotWritten(e)) => return Err(RecordError::NotJournaled(e)),
            Err(WriteFailure::NotSynced(e)) => Err(RecordError::NotSynced(e)),
        };
        next.next_chunk += 1;
        next.states[at].chunks.push(ChunkEntry {
            id,
            name: chunk_name.to_owned(),
            len: body.len(),
            crc32: crc32fast::hash(body),
            failed,
        });
        self.commit(next)?;
        chunk_synced
    }

    /// Replaces the chunks of `state` with `chunks` (name, body), all of which ran, in one
    /// manifest change: a restart replays either the old code or the new, never a mix.
    pub fn record_reload(&mut self, state: &str, chunks: &[(&str, &[u8])]) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        let Some(at) = next.states.iter().position(|s| s.name == state) else {
            return Err(RecordError::UnknownState(state.to_owned()));
        };
        let mut entries = Vec::with_capacity(chunks.len());
        let mut synced = Ok(());
        for (name, body) in chunks {
            let id = next.next_chunk;
            match write_durably(&self.chunk_path(id), body) {
                Ok(()) => {}
                Err(WriteFailure::NotWritten(e)) => {
                    for written in &entries {
                        let written: &ChunkEntry = written;
                        let _ = fs::remove_file(self.chunk_path(written.id));
                    }
                    return Err(RecordError::NotJournaled(e));
                }
                Err(WriteFailure::NotSynced(e)) => synced = Err(RecordError::NotSynced(e)),
            }
            next.next_chunk += 1;
            entries.push(ChunkEntry {
                id,
                name: (*name).to_owned(),
                len: body.len(),
                crc32: crc32fast::hash(body),
                failed: false,
            });
        }
        let old = std::mem::replace(&mut next.states[at].chunks, entries);
        self.commit(next)?;
        for c in old {
            let _ = fs::remove_file(self.chunk_path(c.id));
        }
        synced
    }

    pub fn record_hook_add(&mut self, spec: &HookSpec) -> Result<(), RecordError> {
        let mut record = Vec::new();
        spec.emit(&mut record);
        let mut next = self.manifest.clone();
        next.hooks.push(to_hex(&record));
        self.commit(next)
    }

    /// Forgets the hook holding `queue`, as HOOK_DEL does. Hooks of states
    /// that failed to restore are kept: they are not the one deleted.
    pub fn record_hook_del(&mut self, queue: u16) -> Result<(), RecordError> {
        let mut next = self.manifest.clone();
        next.hooks.retain(|hex| {
            let spec = from_hex(hex).and_then(|r| HookSpec::parse(&r).ok());
            !spec.is_some_and(|s| s.queues().contains(&queue) && self.failures.get(&s.state).is_none())
        });
        if next.hooks.len() == self.manifest.hooks.len() {
            return Ok(());
        }
        self.commit(next)
    }

    fn chunk_path(&self, id: u64) -> PathBuf {
        self.dir.join(CHUNKS).join(chunk_file(id))
    }

    /// Writes `next` and makes it the manifest if the write got as far as
    /// the rename; otherwise the old one stays, on disk and here.
    fn commit(&mut self, next: Manifest) -> Result<(), RecordError> {
        let json =
            serde_json::to_vec_pretty(&next).map_err(|e| RecordError::NotJournaled(io::Error::other(e)))?;
        let mut bytes = format!("{MAGIC} {VERSION} {:08x}\n", crc32fast::hash(&json)).into_bytes();
        bytes.extend_from_slice(&json);
        match write_durably(&self.dir.join(MANIFEST), &bytes) {
            Ok(()) => {
                self.manifest = next;
                Ok(())
            }
            Err(WriteFailure::NotSynced(e)) => {
                self.manifest = next;
                Err(RecordError::NotSynced(e))
            }
            Err(WriteFailure::NotWritten(e)) => Err(RecordError::NotJournaled(e)),
        }
    }
}

/// Parses and checks a manifest and everything it names. The manifest
/// itself must be whole; a state whose chunk files fail the check is put
/// aside in [`Restored::damaged`].
fn load(dir: &Path, bytes: &[u8]) -> Result<(Manifest, Restored), ManifestError> {
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or(ManifestError::NoHeader)?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| ManifestError::HeaderNotText)?;
    let body = &bytes[newline + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(ManifestError::Magic(header.to_owned()));
    }
    if words.next() != Some(&VERSION.to_string()) {
        return Err(ManifestError::Version(header.to_owned()));
    }
    let crc = words.next().and_then(|w| u32::from_str_radix(w, 16).ok()).ok_or(ManifestError::NoChecksum)?;
    if crc != crc32fast::hash(body) {
        return Err(ManifestError::Checksum);
    }
    let manifest: Manifest = serde_json::from_slice(body)?;
    let mut restored = Restored::default();
    let mut names = HashSet::new();
    for state in &manifest.states {
        if !names.insert(state.name.as_str()) {
            return Err(ManifestError::Duplicate(state.name.clone()));
        }
        match state.chunks.iter().map(|c| load_chunk(dir, &state.name, c)).collect() {
            Ok(texts) => restored.states.push((state.clone(), texts)),
            Err(reason) => restored.damaged.push((state.name.clone(), reason.to_string())),
        }
    }
    for (i, hex) in manifest.hooks.iter().enumerate() {
        let record = from_hex(hex).ok_or(ManifestError::HookNotHex(i))?;
        let spec = HookSpec::parse(&record).map_err(|source| ManifestError::Hook { index: i, source })?;
        if !names.contains(spec.state.as_str()) {
            return Err(ManifestError::HookState { index: i, state: spec.state });
        }
        restored.hooks.push(spec);
    }
    Ok((manifest, restored))
}

fn load_chunk(dir: &Path, state: &str, c: &ChunkEntry) -> Result<Vec<u8>, ChunkError> {
    let path = dir.join(CHUNKS).join(chunk_file(c.id));
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(source) => return Err(ChunkError::Read { id: c.id, state: state.to_owned(), path, source }),
    };
    if text.len() != c.len || crc32fast::hash(&text) != c.crc32 {
        return Err(ChunkError::Damaged { id: c.id, state: state.to_owned(), path });
    }
    Ok(text)
}

fn chunk_file(id: u64) -> String {
    format!("{id:010}.lua")
}

fn io_error(path: &Path, source: io::Error) -> JournalError {
    JournalError::Io { path: path.to_owned(), source }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflua_proto::hook::{HookMode, OnError, Overflow};

    fn tmpdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nflua-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn spec(queue: u16) -> HookSpec {
        HookSpec {
            queue_first: queue,
            queue_last: queue + 1,
            mode: HookMode::Target,
            tcp_payload: true,
            on_error: OnError::Verdict(nflua_proto::Verdict::Drop),
            overflow: Overflow::Drop,
            stream_depth: Some(4096),
            eval_mark: 1,
            match_mark: 2,
            state: "a".into(),
            function: "f".into(),
        }
    }

    #[test]
    fn what_is_recorded_comes_back_in_order() {
        let dir = tmpdir("order");
        let (mut j, restored) = open(&dir);
        assert!(restored.states.is_empty());
        j.record_create("a", 65536, 1000, true).unwrap();
        j.record_create("b", 32768, 10, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        j.record_execute("b", "two", b"y = 2", false).unwrap();
        j.record_execute("a", "three", b"x = x + 1", true).unwrap();
        j.record_hook_add(&spec(3)).unwrap();
        j.record_hook_add(&spec(7)).unwrap();
        j.record_hook_del(4).unwrap();
        j.record_destroy("b").unwrap();
        drop(j);
        let (j, restored) = open(&dir);
        assert_eq!(restored.states.len(), 1);
        let (a, texts) = &restored.states[0];
        assert_eq!((a.name.as_str(), a.max_alloc, a.max_runs, a.debug), ("a", 65536, 1000, true));
        assert_eq!(a.chunks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["one", "three"]);
        assert_eq!(texts, &[b"x = 1".to_vec(), b"x = x + 1".to_vec()]);
        assert_eq!(a.chunks.iter().map(|c| c.failed).collect::<Vec<_>>(), [false, true]);
        assert_eq!(restored.hooks, vec![spec(7)]);
        // b's chunk file went with b.
        assert_eq!(fs::read_dir(dir.join(CHUNKS)).unwrap().count(), 2);
        drop(j);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orphan_chunks_are_removed() {
        let dir = tmpdir("orphans");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        fs::write(dir.join(CHUNKS).join(chunk_file(99)), b"left by a crash").unwrap();
        j.remove_orphans();
        let left: Vec<_> = fs::read_dir(dir.join(CHUNKS)).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(chunk_file(0))]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hook_journaled_before_the_overflow_policy_fails_open() {
        let dir = tmpdir("old-hook");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        // A HOOK_ADD record as nfluad wrote it before the policy existed: flags
        // held only tcp-payload (bit 0).
        let mut record = Vec::new();
        for word in [3u32, 4, 1, 1, 0, 1, 2] {
            record.extend_from_slice(&word.to_ne_bytes());
        }
        for name in ["a", "f"] {
            let mut field = [0u8; 64];
            field[..name.len()].copy_from_slice(name.as_bytes());
            record.extend_from_slice(&field);
        }
        let mut next = j.manifest.clone();
        next.hooks.push(to_hex(&record));
        j.commit(next).unwrap();
        drop(j);
        let (_, restored) = open(&dir);
        assert_eq!(
            restored.hooks,
            vec![HookSpec { overflow: Overflow::Accept, stream_depth: None, ..spec(3) }]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn open(dir: &Path) -> (Journal, Restored) {
        Journal::open(dir, RestoreFailures::default()).unwrap()
    }

    fn corrupt_reason(dir: &Path) -> String {
        match Journal::open(dir, RestoreFailures::default()) {
            Err(JournalError::Corrupt { reason, .. }) => reason.to_string(),
            Err(e) => panic!("expected corruption, got {e}"),
            Ok(_) => panic!("expected corruption, the journal opened"),
        }
    }

    #[test]
    fn damage_is_found_before_anything_is_restored() {
        let dir = tmpdir("damage");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        drop(j);
        let manifest = dir.join(MANIFEST);
        let good = fs::read(&manifest).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        fs::write(&manifest, &flipped).unwrap();
        assert!(corrupt_reason(&dir).contains("checksum mismatch"));

        fs::write(&manifest, &good[..good.len() / 2]).unwrap();
        assert!(corrupt_reason(&dir).contains("checksum mismatch"));

        fs::write(&manifest, b"hello\n{}").unwrap();
        assert!(corrupt_reason(&dir).contains("does not start with"));

        fs::remove_dir_all(&dir).unwrap();
    }

    /// A damaged or missing chunk file costs its own state, not the journal.
    #[test]
    fn damaged_chunks_put_their_state_aside() {
        let dir = tmpdir("chunk-damage");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        j.record_create("b", 65536, 1000, false).unwrap();
        j.record_execute("b", "two", b"y = 2", false).unwrap();
        let mut hook_of_a = spec(3);
        hook_of_a.state = "a".into();
        j.record_hook_add(&hook_of_a).unwrap();
        drop(j);

        fs::write(dir.join(CHUNKS).join(chunk_file(0)), b"x = 2").unwrap();
        let (j, restored) = open(&dir);
        assert_eq!(restored.states.iter().map(|(s, _)| s.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(restored.damaged.len(), 1);
        let (name, reason) = &restored.damaged[0];
        assert_eq!(name, "a");
        assert!(reason.contains("chunk 0 of state \"a\"") && reason.contains("was damaged"), "{reason}");
        // The hook is still handed over: the restorer reports it with its state.
        assert_eq!(restored.hooks, vec![hook_of_a]);
        j.mark_failed("a", reason);
        let failed = j.failures().list();
        assert_eq!(failed[0].hooks, ["queues 3:4 function f"]);
        drop(j);

        fs::remove_file(dir.join(CHUNKS).join(chunk_file(0))).unwrap();
        let (_, restored) = open(&dir);
        assert!(restored.damaged[0].1.contains("No such file"), "{:?}", restored.damaged);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A failed state's entries survive later changes and orphan removal;
    /// discarding them frees the name.
    #[test]
    fn failed_states_are_kept_until_discarded() {
        let dir = tmpdir("failed-kept");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        j.record_hook_add(&spec(3)).unwrap();
        drop(j);
        let (mut j, _) = open(&dir);
        j.mark_failed("a", "replaying chunk 0: boom");
        j.record_create("b", 65536, 1000, false).unwrap();
        j.record_execute("b", "two", b"y = 2", false).unwrap();
        j.record_hook_del(3).unwrap();
        j.remove_orphans();
        drop(j);
        let (mut j, restored) = open(&dir);
        let names: Vec<_> = restored.states.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(restored.states[0].1, [b"x = 1".to_vec()]);
        assert_eq!(restored.hooks, vec![spec(3)], "a failed state's hook is not deleted by HOOK_DEL");

        j.mark_failed("a", "again");
        j.discard_failed("a").unwrap();
        assert!(j.failures().list().is_empty());
        drop(j);
        let (_, restored) = open(&dir);
        assert_eq!(restored.states.iter().map(|(s, _)| s.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(restored.hooks.is_empty());
        assert_eq!(fs::read_dir(dir.join(CHUNKS)).unwrap().count(), 1, "a's chunk file is gone");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_files_are_removed_on_open() {
        let dir = tmpdir("tmp-files");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();
        drop(j);
        fs::write(dir.join("journal.tmp"), b"half a manifest").unwrap();
        fs::write(dir.join(CHUNKS).join("0000000007.lua.tmp"), b"half a chunk").unwrap();
        let (_, restored) = open(&dir);
        assert_eq!(restored.states.len(), 1);
        assert!(!dir.join("journal.tmp").exists());
        assert!(!dir.join(CHUNKS).join("0000000007.lua.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// "Not journaled" means absent after a restart, and stays absent when
    /// later changes are written; once the rename happened, the change is in.
    #[test]
    fn the_answer_matches_what_a_restart_finds() {
        use durable::{fail_next_at, Step};
        let dir = tmpdir("honest");
        let (mut j, _) = open(&dir);
        j.record_create("a", 65536, 1000, false).unwrap();

        for step in [Step::Write, Step::Rename] {
            fail_next_at(step);
            let err = j.record_create("lost", 65536, 1000, false).unwrap_err();
            assert!(matches!(err, RecordError::NotJournaled(_)), "{step:?}: {err}");
            assert!(err.to_string().starts_with("applied, but not journaled (lost on restart)"), "{err}");
        }
        fail_next_at(Step::Write);
        let err = j.record_execute("a", "lost chunk", b"lost = true", false).unwrap_err();
        assert!(matches!(err, RecordError::NotJournaled(_)), "{err}");
        // A later change that is journaled does not carry the refused ones along.
        j.record_execute("a", "kept", b"kept = true", false).unwrap();

        fail_next_at(Step::SyncDir);
        let err = j.record_create("unsynced", 65536, 1000, false).unwrap_err();
        assert!(matches!(err, RecordError::NotSynced(_)), "{err}");
        assert!(err.to_string().contains("journaled, but the journal could not be synced"), "{err}");
        drop(j);

        let (_, restored) = open(&dir);
        let names: Vec<_> = restored.states.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["a", "unsynced"]);
        let chunks: Vec<_> = restored.states[0].0.chunks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(chunks, ["kept"]);
        assert_eq!(restored.states[0].1, [b"kept = true".to_vec()]);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}

//! `--state-dir`: a durable record of what clients built — states, the
//! chunks they executed successfully, and hooks — replayed on start so a
//! restarted daemon serves the same filters (SPEC §8).
//!
//! Lua states cannot be serialised, so the journal keeps the recipe, not the
//! result: replaying the chunks in order rebuilds the globals they set.
//! Runtime changes made by callbacks, hooks and timers are not recorded.
//!
//! Layout of the directory:
//! - `journal`: the manifest, rewritten whole on every change (write a
//!   temporary file, fsync it, rename it over the old one, fsync the
//!   directory), so a crash leaves either the old or the new manifest. Its
//!   first line is `nflua-journal 1 <crc32 of the rest>`; the rest is JSON.
//! - `chunks/<id>.lua`: one file per executed chunk, written the same way
//!   before the manifest names it, never changed afterwards. The manifest
//!   holds each chunk's length and CRC-32, so a damaged or missing file is
//!   found before anything is restored.
//!
//! Everything is read and checked before the first state is created: a
//! corrupt journal stops the daemon with a clear error instead of starting
//! with half of it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nflua_proto::hook::HookSpec;
use serde::{Deserialize, Serialize};

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
    Corrupt { path: PathBuf, reason: String },
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
    pub hooks: Vec<HookSpec>,
}

pub struct Journal {
    dir: PathBuf,
    manifest: Manifest,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Journal, Restored), JournalError> {
        let chunks = dir.join(CHUNKS);
        fs::create_dir_all(&chunks).map_err(|e| io_error(&chunks, e))?;
        let path = dir.join(MANIFEST);
        let (manifest, restored) = match fs::read(&path) {
            Ok(bytes) => load(dir, &bytes).map_err(|reason| JournalError::Corrupt { path, reason })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Manifest::default(), Restored::default()),
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok((Journal { dir: dir.to_owned(), manifest }, restored))
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
    ) -> io::Result<()> {
        self.manifest.states.push(StateEntry {
            name: name.to_owned(),
            max_alloc,
            max_runs,
            debug,
            chunks: Vec::new(),
        });
        self.save()
    }

    pub fn record_destroy(&mut self, name: &str) -> io::Result<()> {
        let Some(at) = self.manifest.states.iter().position(|s| s.name == name) else { return Ok(()) };
        let gone = self.manifest.states.remove(at);
        self.save()?;
        for c in gone.chunks {
            let _ = fs::remove_file(self.chunk_path(c.id));
        }
        Ok(())
    }

    pub fn record_execute(
        &mut self,
        state: &str,
        chunk_name: &str,
        body: &[u8],
        failed: bool,
    ) -> io::Result<()> {
        let Some(at) = self.manifest.states.iter().position(|s| s.name == state) else {
            return Err(io::Error::other(format!("state {state:?} is not in the journal")));
        };
        let id = self.manifest.next_chunk;
        write_durably(&self.chunk_path(id), body)?;
        self.manifest.next_chunk += 1;
        self.manifest.states[at].chunks.push(ChunkEntry {
            id,
            name: chunk_name.to_owned(),
            len: body.len(),
            crc32: crc32fast::hash(body),
            failed,
        });
        self.save()
    }

    pub fn record_hook_add(&mut self, spec: &HookSpec) -> io::Result<()> {
        let mut record = Vec::new();
        spec.emit(&mut record);
        self.manifest.hooks.push(to_hex(&record));
        self.save()
    }

    /// Forgets the hook holding `queue`, as HOOK_DEL does.
    pub fn record_hook_del(&mut self, queue: u16) -> io::Result<()> {
        let before = self.manifest.hooks.len();
        self.manifest.hooks.retain(|hex| {
            let spec = from_hex(hex).and_then(|r| HookSpec::parse(&r).ok());
            !spec.is_some_and(|s| s.queues().contains(&queue))
        });
        if self.manifest.hooks.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn chunk_path(&self, id: u64) -> PathBuf {
        self.dir.join(CHUNKS).join(chunk_file(id))
    }

    fn save(&self) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(io::Error::other)?;
        let mut bytes = format!("{MAGIC} {VERSION} {:08x}\n", crc32fast::hash(&json)).into_bytes();
        bytes.extend_from_slice(&json);
        write_durably(&self.dir.join(MANIFEST), &bytes)
    }
}

/// Parses and checks a manifest and everything it names.
fn load(dir: &Path, bytes: &[u8]) -> Result<(Manifest, Restored), String> {
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(format!("header {header:?} does not start with {MAGIC:?}"));
    }
    if words.next() != Some(&VERSION.to_string()) {
        return Err(format!("header {header:?}: unknown version (this nfluad writes {VERSION})"));
    }
    let crc = words.next().and_then(|w| u32::from_str_radix(w, 16).ok()).ok_or("header has no checksum")?;
    if crc != crc32fast::hash(body) {
        return Err("checksum mismatch: the manifest was damaged".into());
    }
    let manifest: Manifest = serde_json::from_slice(body).map_err(|e| format!("manifest: {e}"))?;
    let mut restored = Restored::default();
    let mut names = HashSet::new();
    for state in &manifest.states {
        if !names.insert(state.name.as_str()) {
            return Err(format!("state {:?} appears twice", state.name));
        }
        let texts = state.chunks.iter().map(|c| load_chunk(dir, &state.name, c)).collect::<Result<_, _>>()?;
        restored.states.push((state.clone(), texts));
    }
    for (i, hex) in manifest.hooks.iter().enumerate() {
        let record = from_hex(hex).ok_or_else(|| format!("hook {i}: not hex"))?;
        let spec = HookSpec::parse(&record).map_err(|e| format!("hook {i}: {e}"))?;
        if !names.contains(spec.state.as_str()) {
            return Err(format!("hook {i} names state {:?}, which the journal does not hold", spec.state));
        }
        restored.hooks.push(spec);
    }
    Ok((manifest, restored))
}

fn load_chunk(dir: &Path, state: &str, c: &ChunkEntry) -> Result<Vec<u8>, String> {
    let path = dir.join(CHUNKS).join(chunk_file(c.id));
    let text = fs::read(&path)
        .map_err(|e| format!("chunk {} of state {state:?} ({}): {e}", c.id, path.display()))?;
    if text.len() != c.len || crc32fast::hash(&text) != c.crc32 {
        return Err(format!("chunk {} of state {state:?} ({}) was damaged", c.id, path.display()));
    }
    Ok(text)
}

fn chunk_file(id: u64) -> String {
    format!("{id:010}.lua")
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a mix: temporary file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("journal path has no directory"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
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
    use nflua_proto::hook::{HookMode, OnError};

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
            on_error: OnError::Verdict(0),
            eval_mark: 1,
            match_mark: 2,
            state: "a".into(),
            function: "f".into(),
        }
    }

    #[test]
    fn what_is_recorded_comes_back_in_order() {
        let dir = tmpdir("order");
        let (mut j, restored) = Journal::open(&dir).unwrap();
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
        let (j, restored) = Journal::open(&dir).unwrap();
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
        let (mut j, _) = Journal::open(&dir).unwrap();
        j.record_create("a", 65536, 1000, false).unwrap();
        j.record_execute("a", "one", b"x = 1", false).unwrap();
        fs::write(dir.join(CHUNKS).join(chunk_file(99)), b"left by a crash").unwrap();
        j.remove_orphans();
        let left: Vec<_> = fs::read_dir(dir.join(CHUNKS)).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(chunk_file(0))]);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn corrupt_reason(dir: &Path) -> String {
        match Journal::open(dir) {
            Err(JournalError::Corrupt { reason, .. }) => reason,
            Err(e) => panic!("expected corruption, got {e}"),
            Ok(_) => panic!("expected corruption, the journal opened"),
        }
    }

    #[test]
    fn damage_is_found_before_anything_is_restored() {
        let dir = tmpdir("damage");
        let (mut j, _) = Journal::open(&dir).unwrap();
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

        fs::write(&manifest, &good).unwrap();
        fs::write(dir.join(CHUNKS).join(chunk_file(0)), b"x = 2").unwrap();
        assert!(corrupt_reason(&dir).contains("chunk 0 of state \"a\""));

        fs::remove_file(dir.join(CHUNKS).join(chunk_file(0))).unwrap();
        assert!(corrupt_reason(&dir).contains("No such file"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 0xab, 0xff])), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}

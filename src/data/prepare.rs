//! Tokenizing a corpus into a token store (`masklm data prepare`, or implicitly on first use).
//!
//! One thread reads and decodes the corpus into batches of about `BATCH_BYTES` of text; the
//! calling thread tokenizes each batch on every core (`tokenizers`' parallel `encode_batch`)
//! while the reader fills the next, and appends the ids to the shard being written. Memory stays
//! bounded whatever the corpus size: two text batches, their encodings, one shard's ids.
//! Everything is written into a temporary folder beside the store, renamed into place once the
//! manifest is complete: an error (a malformed JSON line, a full disk) leaves no store behind, and
//! runs that build the same store at once each end with it.

use super::corpus::PieceReader;
use super::repeats::RepeatedLines;
use super::store::{self, Manifest, ShardInfo};
use crate::error::UsageError;
use crate::tokenizer::BertTokenizer;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Text handed to one parallel `encode_batch` call: at most this many bytes, and at most
/// [`BATCH_PIECES`] pieces.
const BATCH_BYTES: usize = 4 << 20;

/// Each piece's encoding holds several vectors until its ids are copied out, so 4 MiB of
/// one-word lines (millions of pieces) would take gigabytes (`data prepare` of 10 MB of `a` lines
/// in batches closed at 4 MiB alone: 3.5 GB). 16 Ki pieces are ~1.5 MB of ordinary text, still
/// thousands per thread.
const BATCH_PIECES: usize = 16 << 10;

/// Pieces of text with, for each, whether it starts a document and whether it continues the
/// line of the piece before (the reader cuts a line longer than 64 KiB).
type TextBatch = Vec<(String, bool, bool)>;

/// Writes ids into shards of about `shard_tokens`, each ending at a line end.
pub struct ShardWriter {
    dir: PathBuf,
    width: u32,
    shard_tokens: usize,
    ids: Vec<u32>,
    line_ends: Vec<u32>,
    seps: Vec<u32>,
    shards: Vec<ShardInfo>,
    /// A document has ids written and no separator yet.
    doc_open: bool,
    /// The next line with ids starts a document.
    doc_pending: bool,
    /// The last line given had ids, so its rest can be appended to it.
    line_open: bool,
}

impl ShardWriter {
    pub fn new(dir: &Path, width: u32, shard_tokens: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            width,
            shard_tokens,
            ids: Vec::new(),
            line_ends: Vec::new(),
            seps: Vec::new(),
            shards: Vec::new(),
            doc_open: false,
            doc_pending: false,
            line_open: false,
        }
    }

    /// Appends one line's ids. A line without ids is dropped, but a document it starts still
    /// starts (at the next line that has ids).
    pub fn line(&mut self, ids: &[u32], new_doc: bool) -> Result<()> {
        self.doc_pending |= new_doc;
        self.line_open = !ids.is_empty();
        if ids.is_empty() {
            return Ok(());
        }
        if self.doc_pending && self.doc_open {
            // The separator belongs to the shard holding the document's last line: recorded
            // before that shard is closed.
            self.seps.push(self.ids.len() as u32);
        }
        self.doc_pending = false;
        if self.ids.len() >= self.shard_tokens {
            self.flush()?;
        }
        self.ids.extend_from_slice(ids);
        self.line_ends.push(self.ids.len() as u32);
        self.doc_open = true;
        Ok(())
    }

    /// Appends the ids of the rest of a line (a piece the reader cut from it) to that line, so
    /// that a long line stays one line (one row in line packing). In a full shard, or after a
    /// piece without ids, the rest starts a line of its own.
    pub fn continue_line(&mut self, ids: &[u32]) -> Result<()> {
        if !self.line_open || self.line_ends.is_empty() || self.ids.len() >= self.shard_tokens {
            return self.line(ids, false);
        }
        self.ids.extend_from_slice(ids);
        *self.line_ends.last_mut().expect("checked above") = self.ids.len() as u32;
        Ok(())
    }

    /// Ends the last document and writes the last shard; returns every shard written.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        if self.doc_open {
            self.seps.push(self.ids.len() as u32);
        }
        if !self.ids.is_empty() {
            self.flush()?;
        }
        Ok(self.shards)
    }

    fn flush(&mut self) -> Result<()> {
        let (tokens, lines, seps) = (
            self.ids.len() as u64,
            self.line_ends.len() as u64,
            self.seps.len() as u64,
        );
        let [ids_at, _, _, sums_at] = store::layout(self.width as usize, tokens, lines, seps);
        let mut b = store::header_bytes(self.width, tokens, lines, seps);
        b.reserve(sums_at.end - b.len());
        match self.width {
            2 => self
                .ids
                .iter()
                .for_each(|&x| b.extend_from_slice(&(x as u16).to_le_bytes())),
            _ => self
                .ids
                .iter()
                .for_each(|&x| b.extend_from_slice(&x.to_le_bytes())),
        }
        b.resize(ids_at.end, 0);
        for &x in self.line_ends.iter().chain(&self.seps) {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let sums: Vec<blake3::Hash> = b[ids_at.clone()]
            .chunks(store::BLOCK_BYTES)
            .map(blake3::hash)
            .collect();
        sums.iter().for_each(|h| b.extend_from_slice(h.as_bytes()));
        debug_assert_eq!(b.len(), sums_at.end);
        let index_blake3 = store::index_hash(&b[..store::HEADER_BYTES], &b[ids_at.end..]);
        let file = format!("shard-{:05}.bin", self.shards.len());
        let path = self.dir.join(&file);
        std::fs::write(&path, &b).with_context(|| format!("writing {}", path.display()))?;
        self.shards.push(ShardInfo {
            file,
            bytes: b.len() as u64,
            tokens,
            lines,
            seps,
            index_blake3,
        });
        self.ids.clear();
        self.line_ends.clear();
        self.seps.clear();
        Ok(())
    }
}

/// Tokenizes `files` into a store at `dir`, replacing a stale one there. `manifest`: what the
/// store will say of its sources and tokenizer (from `store::expected`, taken before reading).
/// Returns the manifest of the store in `dir` (see `put_in_place`).
pub fn prepare(
    files: &[PathBuf],
    tok: &BertTokenizer,
    mut manifest: Manifest,
    dir: &Path,
    shard_tokens: usize,
) -> Result<Manifest> {
    remove_abandoned(dir);
    let tmp = crate::io::tmp_path(dir);
    let _ = std::fs::remove_dir_all(&tmp);
    let made = crate::io::make_dirs(&tmp).map_err(|e| {
        UsageError::new(format!(
            "cannot create the token store in {}: {e}; set data.cache_dir to a writable folder",
            tmp.parent().unwrap_or(Path::new(".")).display()
        ))
    })?;
    let result = write_store(files, tok, &mut manifest, &tmp, shard_tokens)
        .and_then(|()| put_in_place(&tmp, dir, &manifest));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        crate::io::remove_made(&made);
    }
    result
}

/// Moves the store built in `tmp` to `dir` and returns the manifest of the store now there.
/// Runs sharing a cache folder may build the same store at once: a current store that another
/// process put in `dir` meanwhile is kept (the builds are identical) and `tmp` dropped. A stale
/// one is first renamed aside in one step, so no process ever opens a half-removed store.
fn put_in_place(tmp: &Path, dir: &Path, manifest: &Manifest) -> Result<Manifest> {
    let aside = dir.with_file_name(format!(
        ".{}.trash-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    // A few tries: each failed rename means another process placed a store in between.
    for _ in 0..3 {
        if let Ok(current) = store::TokenStore::open_if_current(dir, manifest)? {
            let _ = std::fs::remove_dir_all(tmp);
            return Ok(current.manifest().clone());
        }
        match std::fs::rename(dir, &aside) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&aside);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("moving the stale {} aside", dir.display()));
            }
        }
        match std::fs::rename(tmp, dir) {
            Ok(()) => return Ok(manifest.clone()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
                ) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()));
            }
        }
    }
    anyhow::bail!(
        "another process kept replacing the corpus store {} while this one was placing its own; \
         run one preparation at a time (`masklm data prepare`)",
        dir.display()
    )
}

/// Removes the temporary folders that builds killed midway left beside the store folder `dir`:
/// this store's whose process is gone, and any other store's whose process is gone and that
/// nothing has written in for a day (a killed build of a corpus list never built again would
/// otherwise stay for good; the age spares a live build that another PID namespace, a container
/// sharing the cache, runs under a number this one does not see). Linux; elsewhere they stay,
/// harmless but for their space.
fn remove_abandoned(dir: &Path) {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let (Some(parent), Some(own)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let own = own.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // `.store-KEY.tmp-PID` or `.store-KEY.trash-PID`.
        let Some((store, pid)) = n
            .strip_prefix('.')
            .filter(|rest| rest.starts_with("store-"))
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(store, kind)| {
                let pid = kind
                    .strip_prefix("tmp-")
                    .or_else(|| kind.strip_prefix("trash-"))?;
                Some((store, pid.parse::<u64>().ok()?))
            })
        else {
            continue;
        };
        let gone = crate::io::process_gone(pid);
        let stale = || {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > DAY))
        };
        if gone && (store == own || stale()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn write_store(
    files: &[PathBuf],
    tok: &BertTokenizer,
    manifest: &mut Manifest,
    tmp: &Path,
    shard_tokens: usize,
) -> Result<()> {
    let total: u64 = manifest.sources.iter().map(|s| s.size).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "tokenizing {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("static template"),
    );
    let start = Instant::now();
    let reader = PieceReader::new(files.to_vec(), &manifest.text_field);
    let read_bytes = reader.bytes_read();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<TextBatch>>(1);
    let reading = std::thread::spawn(move || {
        let (mut batch, mut bytes) = (TextBatch::new(), 0);
        for piece in reader {
            match piece {
                Ok(p) => {
                    bytes += p.text.len();
                    batch.push((p.text, p.new_doc, p.continues));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            if bytes >= BATCH_BYTES || batch.len() >= BATCH_PIECES {
                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                bytes = 0;
            }
        }
        let _ = tx.send(Ok(batch));
    });
    let mut writer = ShardWriter::new(tmp, manifest.id_width, shard_tokens);
    let mut repeats = RepeatedLines::default();
    for batch in rx {
        let batch = batch?;
        let encoded = tok.encode_batch(batch.iter().map(|(t, _, _)| t.as_str()).collect())?;
        for ((_, new_doc, continues), ids) in batch.iter().zip(&encoded) {
            if *continues {
                // A long line's repeats are judged by its first piece.
                writer.continue_line(ids)?;
            } else {
                writer.line(ids, *new_doc)?;
                repeats.observe(ids);
            }
        }
        bar.set_position(read_bytes.load(Ordering::Relaxed));
    }
    reading.join().expect("the corpus reader panicked");
    manifest.shards = writer.finish()?;
    bar.finish_and_clear();
    if manifest.shards.is_empty() {
        return Err(UsageError::new(format!(
            "corpus {} contains no tokens; give files with text in them",
            store::describe(files)
        ))
        .into());
    }
    let json = serde_json::to_vec_pretty(manifest)?;
    let path = tmp.join(store::MANIFEST_FILE);
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&json)?;
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    crate::errln!(
        "tokenized {} ({}) in {secs:.1} s ({:.1} MB/s): {} tokens, {} lines, {} documents, {} \
         shard(s), {}",
        store::describe(files),
        store::megabytes(total),
        total as f64 / 1e6 / secs.max(1e-9),
        manifest.tokens(),
        manifest.lines(),
        manifest.documents(),
        manifest.shards.len(),
        store::megabytes(manifest.bytes())
    );
    if let Some(note) = repeats.warning(&store::describe(files)) {
        crate::errln!("{note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_end_with_a_separator_in_the_shard_of_their_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), 2, 3);
        // doc A: lines [1 2] [3 4]; a blank-only doc start with no ids; doc B: [5]; doc C: [6 7].
        w.line(&[1, 2], true).unwrap();
        w.line(&[3, 4], false).unwrap(); // shard 0 is full after this line
        w.line(&[], true).unwrap();
        w.line(&[5], false).unwrap(); // starts doc B (the empty line carried the start)
        w.line(&[6, 7], true).unwrap();
        let shards = w.finish().unwrap();
        let counts: Vec<_> = shards.iter().map(|s| (s.tokens, s.lines, s.seps)).collect();
        // A's separator went into shard 0 before it closed; B and C end in shard 1.
        assert_eq!(counts, [(4, 2, 1), (3, 2, 2)]);
    }

    #[test]
    fn the_rest_of_a_cut_line_stays_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), 2, 4);
        w.line(&[1, 2], true).unwrap();
        w.continue_line(&[3]).unwrap(); // the rest of line [1 2]: one line of three ids
        w.line(&[], false).unwrap(); // a cut piece without ids...
        w.continue_line(&[4]).unwrap(); // ...whose rest starts a line: the shard is full now
        w.continue_line(&[5, 6]).unwrap(); // past a full shard, a line of the next one
        let shards = w.finish().unwrap();
        let counts: Vec<_> = shards.iter().map(|s| (s.tokens, s.lines)).collect();
        assert_eq!(counts, [(4, 2), (2, 1)]);
    }

    /// A store folder `dir` holding one line of `ids`, its manifest naming `tokenizer`.
    fn store_at(dir: &Path, tokenizer: &str, ids: &[u32]) -> Manifest {
        std::fs::create_dir_all(dir).unwrap();
        let mut w = ShardWriter::new(dir, 2, 100);
        w.line(ids, true).unwrap();
        let m = Manifest {
            format: store::FORMAT_VERSION,
            tokenizer: tokenizer.into(),
            text_field: "text".into(),
            id_width: 2,
            sources: Vec::new(),
            shards: w.finish().unwrap(),
        };
        let json = serde_json::to_vec(&m).unwrap();
        std::fs::write(dir.join(store::MANIFEST_FILE), json).unwrap();
        m
    }

    #[test]
    fn the_next_build_removes_what_killed_builds_left() {
        let root = tempfile::tempdir().unwrap();
        // A process id that does not exist.
        let dead = (100_000..4_000_000)
            .find(|&p| {
                (unsafe { libc::kill(p, 0) }) != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            })
            .unwrap();
        let own = std::process::id();
        let names = [
            format!(".store-zzz.tmp-{dead}"),
            format!(".store-zzz.trash-{dead}"),
            format!(".store-aaa.tmp-{dead}"),
            format!(".store-bbb.trash-{dead}"),
            format!(".store-ccc.tmp-{dead}"),
            format!(".store-zzz.tmp-{own}"),
            format!(".other.tmp-{dead}"),
        ];
        for n in &names {
            std::fs::create_dir_all(root.path().join(n).join("sub")).unwrap();
        }
        // Another store's, a day old: its build is gone for good.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
        for n in &names[2..4] {
            let f = std::fs::File::open(root.path().join(n)).unwrap();
            f.set_modified(old).unwrap();
        }
        remove_abandoned(&root.path().join("store-zzz"));
        let left: Vec<bool> = names.iter().map(|n| root.path().join(n).exists()).collect();
        assert_eq!(left, [false, false, false, false, true, true, true]);
    }

    #[test]
    fn a_store_another_run_placed_meanwhile_is_kept_and_a_stale_one_replaced() {
        let root = tempfile::tempdir().unwrap();
        let (dir, ours) = (
            root.path().join("store-x"),
            root.path().join(".store-x.tmp-1"),
        );
        // Two runs built the same store at once; the other placed it first: ours is dropped.
        let m = store_at(&dir, "t", &[5, 6, 7]);
        std::fs::write(dir.join("theirs"), "").unwrap();
        store_at(&ours, "t", &[5, 6, 7]);
        assert_eq!(put_in_place(&ours, &dir, &m).unwrap(), m);
        assert!(dir.join("theirs").exists() && !ours.exists());
        // A store of another tokenizer is stale: replaced, and nothing is left aside.
        let m = store_at(&ours, "u", &[8, 9]);
        assert_eq!(put_in_place(&ours, &dir, &m).unwrap(), m);
        assert!(!dir.join("theirs").exists() && !ours.exists());
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        let text = std::fs::read_to_string(dir.join(store::MANIFEST_FILE)).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}

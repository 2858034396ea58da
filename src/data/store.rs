//! The token store: a corpus tokenized once into memory-mapped shards, read without loading it.
//!
//! A store is a folder `<data.cache_dir>/store-<key>/` (the key: the tokenizer, the text field
//! and the corpus files' paths) holding `shard-NNNNN.bin` files and `manifest.json`. Each shard
//! holds about [`SHARD_TOKENS`] ids and ends at a line end:
//!
//! ```text
//! header  64 bytes: b"MLMSHD02", id width (u32: 2 or 4), 0u32, tokens, lines, seps, blocks (u64)
//! ids     tokens × width, little-endian, zero-padded to 8 bytes
//! lines   lines × u32: where each line ends, relative to the shard
//! seps    seps × u32: offsets before which a document ended (see rows::Segment)
//! sums    blocks × 32 bytes: the BLAKE3 of each BLOCK_BYTES block of the (padded) ids
//! ```
//!
//! The manifest lists each source file with its size and modification time, each shard with
//! its counts and the BLAKE3 of its index (the header and everything after the ids), the
//! tokenizer's hash and the format version. Opening a store compares sizes and times only (no
//! byte of the corpus is read: the start costs the same at any size). A shard's index is checked
//! when the shard is first touched (about 2 MB), and each block of ids when a row first reads it
//! (64 KiB), so checking costs a run nothing it would not read anyway; `masklm data verify`
//! checks everything at once. A shard that fails a check is named, and the manifest removed, so
//! the next run tokenizes the corpus again instead of reading garbage.

use super::rows::{self, Ids, Segment};
use crate::config::Packing;
use crate::error::UsageError;
use crate::tokenizer::BertTokenizer;
use anyhow::Result;
use memmap2::{Mmap, UncheckedAdvice};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

// Shards are mapped and read in place as little-endian words.
#[cfg(target_endian = "big")]
compile_error!(
    "masklm's token store reads little-endian shards in place: little-endian targets only"
);

/// Bumped whenever the shard layout or what goes into it changes: older stores are rebuilt.
pub const FORMAT_VERSION: u32 = 6;
pub const SHARD_MAGIC: &[u8; 8] = b"MLMSHD02";
pub const HEADER_BYTES: usize = 64;
pub const MANIFEST_FILE: &str = "manifest.json";
/// Ids per shard: 32 MiB of u16 ids.
pub const SHARD_TOKENS: usize = 1 << 24;
/// Bytes of ids under one checksum: what the first read of a row in them costs to check.
pub const BLOCK_BYTES: usize = 64 << 10;
/// Rows read between two releases of the mapped pages ([`TokenStore::release_pages`]). On the
/// 8 GB store at bench-mini's 128-token rows a row maps ~120 KiB (the kernel maps 64 KiB around
/// each page a row or its binary search touches): at most ~120 MiB between releases, measured.
pub const RELEASE_EVERY_ROWS: u64 = 1024;

/// Why [`TokenStore::open_if_current`] found no store: none was built, which is no news.
const NOT_PREPARED: &str = "not prepared yet";

/// A corpus file as it was when the store was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: u64,
}

impl Source {
    /// The files' sizes and modification times now.
    pub fn stat_all(files: &[PathBuf]) -> Result<Vec<Source>> {
        // The working folder read once: `std::path::absolute` reads it for each relative path,
        // two system calls a file in a corpus of many small files.
        let cwd = std::env::current_dir().ok();
        files
            .iter()
            .map(|f| Source::stat(f, cwd.as_deref()))
            .collect()
    }

    /// The size and modification time of `path` now; `cwd` is the working folder.
    fn stat(path: &Path, cwd: Option<&Path>) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(|e| {
            UsageError::new(format!(
                "corpus path {} cannot be read: {e}",
                path.display()
            ))
        })?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        // Absolute, as the store's folder is named: a store is shared by runs from other
        // folders, and its manifest must name the same files for each.
        let joined = cwd.map_or_else(|| path.to_path_buf(), |d| d.join(path));
        Ok(Source {
            path: std::path::absolute(&joined).unwrap_or(joined),
            size: meta.len(),
            mtime_ns,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub bytes: u64,
    pub tokens: u64,
    pub lines: u64,
    pub seps: u64,
    /// BLAKE3 of the header and of everything after the ids (lines, seps, block sums).
    pub index_blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// BLAKE3 of the tokenizer's JSON.
    pub tokenizer: String,
    pub text_field: String,
    /// Bytes per id: 2 when the vocabulary fits in u16, else 4.
    pub id_width: u32,
    pub sources: Vec<Source>,
    pub shards: Vec<ShardInfo>,
}

impl Manifest {
    pub fn tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.tokens).sum()
    }
    pub fn lines(&self) -> u64 {
        self.shards.iter().map(|s| s.lines).sum()
    }
    pub fn documents(&self) -> u64 {
        self.shards.iter().map(|s| s.seps).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }
}

/// Byte ranges of a shard's parts: ids (padded to 8 bytes), line ends, seps, block sums.
pub fn layout(width: usize, tokens: u64, lines: u64, seps: u64) -> [Range<usize>; 4] {
    let ids = HEADER_BYTES..(HEADER_BYTES + tokens as usize * width).next_multiple_of(8);
    let lines = ids.end..ids.end + lines as usize * 4;
    let seps = lines.end..lines.end + seps as usize * 4;
    let sums = seps.end..seps.end + ids.len().div_ceil(BLOCK_BYTES) * 32;
    [ids, lines, seps, sums]
}

/// The store folder of `files` and what its manifest must say to be current (shards aside):
/// the folder is named by the tokenizer, the text field and the files' absolute paths.
pub fn locate(
    files: &[PathBuf],
    tok: &BertTokenizer,
    text_field: &str,
    cache_dir: &Path,
) -> Result<(PathBuf, Manifest)> {
    let want = expected(files, tok, text_field)?;
    let mut h = blake3::Hasher::new();
    h.update(&FORMAT_VERSION.to_le_bytes());
    h.update(want.tokenizer.as_bytes());
    h.update(&(text_field.len() as u64).to_le_bytes());
    h.update(text_field.as_bytes());
    for source in &want.sources {
        // The absolute path: the same relative name from another folder is another corpus.
        let s = source.path.to_string_lossy();
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    let key = h.finalize().to_hex();
    Ok((cache_dir.join(format!("store-{}", &key[..32])), want))
}

/// A shard, mapped (and its index checked) when first touched.
struct Shard {
    path: PathBuf,
    info: ShardInfo,
    open: OnceLock<std::result::Result<Opened, String>>,
}

/// A mapped shard whose index has been checked, and which of its blocks of ids have been.
struct Opened {
    file: File,
    map: Mmap,
    /// One bit per block of ids.
    checked: Vec<AtomicU64>,
}

/// An opened store: the manifest and the shards, mapped lazily.
pub struct TokenStore {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// Per shard, packed positions and lines before it (prefix sums, one word per shard).
    packed_before: Vec<u64>,
    lines_before: Vec<u64>,
    /// Rows read so far, to release the mapped pages every [`RELEASE_EVERY_ROWS`].
    rows_read: AtomicU64,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl TokenStore {
    /// Opens the store in `dir` if its manifest matches `want` (format, tokenizer, text field,
    /// every source's size and time) and every shard file has its recorded length; otherwise
    /// `Ok(Err(why))`, saying what is stale. No shard is read.
    pub fn open_if_current(
        dir: &Path,
        want: &Manifest,
    ) -> Result<std::result::Result<TokenStore, String>> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(NOT_PREPARED.into()));
            }
            Err(e) => return Ok(Err(format!("{} cannot be read: {e}", path.display()))),
        };
        let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
            return Ok(Err(format!("{} is damaged", path.display())));
        };
        if m.format != want.format {
            return Ok(Err(format!("format {} (now {})", m.format, want.format)));
        }
        if (&m.tokenizer, &m.text_field) != (&want.tokenizer, &want.text_field) {
            return Ok(Err("another tokenizer or text field".into()));
        }
        if m.sources.len() != want.sources.len() {
            return Ok(Err("another list of corpus files".into()));
        }
        // The paths are the same files however they were written ("./a.txt", "a.txt"): the
        // folder is named by their absolute paths.
        for (old, new) in m.sources.iter().zip(&want.sources) {
            if (old.size, old.mtime_ns) != (new.size, new.mtime_ns) {
                return Ok(Err(format!(
                    "{} changed (size {} → {}, modified {} → {})",
                    new.path.display(),
                    old.size,
                    new.size,
                    old.mtime_ns,
                    new.mtime_ns
                )));
            }
        }
        if m.id_width != want.id_width {
            return Ok(Err(format!(
                "ids of {} bytes (now {})",
                m.id_width, want.id_width
            )));
        }
        for s in &m.shards {
            let p = dir.join(&s.file);
            // A manifest whose counts do not add up to the shard's length (damaged, or written
            // by hand) would have rows read past the file's end.
            if layout_of(s, m.id_width)[3].end as u64 != s.bytes || s.file.contains('/') {
                return Ok(Err(format!("{} is damaged", path.display())));
            }
            let len = std::fs::metadata(&p).map(|m| m.len()).ok();
            if len != Some(s.bytes) {
                return Ok(Err(format!(
                    "shard {} is missing or has another length than its manifest says",
                    p.display()
                )));
            }
        }
        Ok(Ok(Self::from_manifest(dir, m)))
    }

    fn from_manifest(dir: &Path, manifest: Manifest) -> TokenStore {
        let (mut packed_before, mut lines_before) = (vec![0u64], vec![0u64]);
        for s in &manifest.shards {
            packed_before.push(packed_before.last().unwrap() + s.tokens + s.seps);
            lines_before.push(lines_before.last().unwrap() + s.lines);
        }
        let shards = manifest
            .shards
            .iter()
            .map(|info| Shard {
                path: dir.join(&info.file),
                info: info.clone(),
                open: OnceLock::new(),
            })
            .collect();
        TokenStore {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            packed_before,
            lines_before,
            rows_read: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// BLAKE3 of the tokenized corpus: each shard's index hash covers the hashes of its blocks of
    /// ids, its line and document boundaries, so two stores share it when they hold the same
    /// ids in the same order (whatever the files' names, times or cache folder).
    pub fn content_id(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(&self.manifest.id_width.to_le_bytes());
        for s in &self.manifest.shards {
            h.update(s.index_blake3.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    pub fn packed_len(&self) -> u64 {
        *self.packed_before.last().unwrap()
    }

    pub fn n_lines(&self) -> u64 {
        *self.lines_before.last().unwrap()
    }

    /// Rows of `seq_len` under `packing`.
    pub fn n_rows(&self, packing: Packing, seq_len: usize) -> u64 {
        rows::count(packing, self.packed_len(), self.n_lines(), seq_len)
    }

    /// Shard `s`, opened (and its index checked) the first time.
    fn opened(&self, s: usize) -> Result<&Opened> {
        let shard = &self.shards[s];
        shard
            .open
            .get_or_init(|| self.open_shard(shard))
            .as_ref()
            .map_err(|e| UsageError::new(e.clone()).into())
    }

    /// Shard `s`'s tokens. Its ids are not checked here: see [`TokenStore::check_ids`].
    fn segment(&self, s: usize) -> Result<Segment<'_>> {
        let map = &self.opened(s)?.map;
        let info = &self.shards[s].info;
        let width = self.manifest.id_width as usize;
        let [ids, lines, seps, _] = layout(width, info.tokens, info.lines, info.seps);
        let ids = ids.start..ids.start + info.tokens as usize * width;
        let ids = match width {
            2 => Ids::U16(bytemuck::cast_slice(&map[ids])),
            _ => Ids::U32(bytemuck::cast_slice(&map[ids])),
        };
        Ok(Segment {
            ids,
            line_ends: bytemuck::cast_slice(&map[lines]),
            seps: bytemuck::cast_slice(&map[seps]),
        })
    }

    /// Checks the blocks holding shard `s`'s ids `range` that no read has checked yet.
    fn check_ids(&self, s: usize, range: Range<usize>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let o = self.opened(s)?;
        let width = self.manifest.id_width as usize;
        let first = range.start * width / BLOCK_BYTES;
        let last = (range.end * width - 1) / BLOCK_BYTES;
        for b in first..=last {
            let (word, bit) = (&o.checked[b / 64], 1u64 << (b % 64));
            if word.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let shard = &self.shards[s];
            // The sums come from the map: the index holding them was checked at open.
            let [ids, _, _, sums] = layout_of(&shard.info, self.manifest.id_width);
            let want = &o.map[sums.start + 32 * b..sums.start + 32 * (b + 1)];
            check_block(&o.file, &ids, b, want, &mut Vec::new())
                .map_err(|why| UsageError::new(self.damaged(&shard.path, &why)))?;
            word.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Opens, checks the index of, and maps a shard. The index is read with `pread`, not through
    /// the map, so that checking charges no page to this process.
    fn open_shard(&self, shard: &Shard) -> std::result::Result<Opened, String> {
        let file = File::open(&shard.path)
            .map_err(|e| format!("opening {}: {e}", shard.path.display()))?;
        if let Err(why) = check_index(&file, &shard.info, self.manifest.id_width) {
            return Err(self.damaged(&shard.path, &why));
        }
        // Safety: shards are written once, to a temporary folder renamed into place, and never
        // modified; a file changed under the map could only change the ids read, and those are
        // checked block by block before use.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| format!("mapping {}: {e}", shard.path.display()))?;
        // Rows are read in random order: no read-ahead beyond the pages touched.
        let _ = map.advise(memmap2::Advice::Random);
        let blocks = layout_of(&shard.info, self.manifest.id_width)[0]
            .len()
            .div_ceil(BLOCK_BYTES);
        let checked = (0..blocks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Opened { file, map, checked })
    }

    /// Counts a row read, releasing the mapped pages every [`RELEASE_EVERY_ROWS`] rows.
    fn row_read(&self) {
        let n = self.rows_read.fetch_add(1, Ordering::Relaxed);
        if n % RELEASE_EVERY_ROWS == RELEASE_EVERY_ROWS - 1 {
            self.release_pages();
        }
    }

    /// Unmaps the pages of the opened shards from this process (`MADV_DONTNEED`); they stay in
    /// the page cache and the next read maps them again. Without it, a long run's random rows
    /// would map page after page until the process's resident set held the whole store.
    pub fn release_pages(&self) {
        for shard in &self.shards {
            if let Some(Ok(o)) = shard.open.get() {
                // Safety: a read-only map of a file that is never modified: dropping its pages
                // makes the next read fetch the same bytes from the file again.
                let _ = unsafe { o.map.unchecked_advise(UncheckedAdvice::DontNeed) };
            }
        }
    }

    /// Marks the store stale: its manifest removed, so the next run rebuilds it. Where that
    /// fails (a read-only cache), what to do instead.
    fn mark_stale(&self) -> Result<(), String> {
        match std::fs::remove_file(self.dir.join(MANIFEST_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!(
                "the store {} cannot be marked stale ({e}): remove that folder by hand, or point \
                 data.cache_dir at a folder masklm can write in",
                self.dir.display()
            )),
            _ => Ok(()),
        }
    }

    /// Marks the store stale and says so; unless the store was replaced since it was opened
    /// (another process rebuilt it: its shards are not the ones this manifest describes), which
    /// is left alone.
    fn damaged(&self, shard: &Path, why: &str) -> String {
        let now = std::fs::read_to_string(self.dir.join(MANIFEST_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<Manifest>(&t).ok());
        if now.as_ref() != Some(&self.manifest) {
            return format!(
                "corpus store {} was rebuilt or removed by another process (a `masklm data \
                 prepare`, or a run on a corpus file that changed) while this one read it: run \
                 the command again",
                self.dir.display()
            );
        }
        let what = format!("corpus store shard {} is damaged ({why})", shard.display());
        match self.mark_stale() {
            Ok(()) => format!(
                "{what}; the store is marked stale and the next run tokenizes the corpus again: \
                 run the command again (or `masklm data prepare`)"
            ),
            Err(fix) => format!("{what}; {fix}"),
        }
    }

    /// Checks every shard whole; returns the damaged ones' messages, and marks the store stale
    /// if there are any: `Err` with what to do instead where that failed (a read-only cache).
    pub fn verify_all(&self) -> (Vec<String>, Result<(), String>) {
        let width = self.manifest.id_width;
        let bad: Vec<String> = self
            .shards
            .iter()
            .filter_map(|s| {
                check_whole(&s.path, &s.info, width)
                    .err()
                    .map(|why| format!("{}: {why}", s.path.display()))
            })
            .collect();
        let marked = if bad.is_empty() {
            Ok(())
        } else {
            self.mark_stale()
        };
        (bad, marked)
    }

    /// Writes packed row content starting at packed position `v` into `out` (all of it: rows
    /// never run past the stream's end).
    pub fn fill_packed(&self, v: u64, sep: u32, out: &mut [u32]) -> Result<()> {
        self.row_read();
        let mut s = self.packed_before.partition_point(|&b| b <= v) - 1;
        let (mut v, mut done) = (v, 0);
        while done < out.len() {
            let seg = self.segment(s)?;
            let at = v - self.packed_before[s];
            // The ids this part of the row can read: from the first at or after `at`, at most
            // one per position left.
            let j = seg.seps_before(at);
            let real = (at - j as u64) as usize;
            let end = (real + out.len() - done).min(seg.ids.len());
            self.check_ids(s, real..end)?;
            done += seg.fill_packed_after(at, j, sep, &mut out[done..]);
            (s, v) = (s + 1, self.packed_before[s + 1]);
        }
        Ok(())
    }

    /// Writes the first `out.len()` ids (at most) of line `k` into `out`; returns how many.
    pub fn fill_line(&self, k: u64, out: &mut [u32]) -> Result<usize> {
        self.row_read();
        let s = self.lines_before.partition_point(|&b| b <= k) - 1;
        let seg = self.segment(s)?;
        let k = (k - self.lines_before[s]) as usize;
        self.check_ids(s, seg.line_range(k, out.len()))?;
        Ok(seg.fill_line(k, out.len(), out))
    }

    /// The first `n` ids of the corpus (fewer if it is shorter), without separators.
    pub fn first_ids(&self, n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for s in 0..self.shards.len() {
            if out.len() >= n {
                break;
            }
            let seg = self.segment(s)?;
            let k = seg.ids.len().min(n - out.len());
            self.check_ids(s, 0..k)?;
            let at = out.len();
            out.resize(at + k, 0);
            seg.ids.copy_to(0..k, &mut out[at..]);
        }
        Ok(out)
    }
}

fn layout_of(info: &ShardInfo, width: u32) -> [Range<usize>; 4] {
    layout(width as usize, info.tokens, info.lines, info.seps)
}

/// BLAKE3 of a shard's index: its header and the bytes after its ids.
pub fn index_hash(header: &[u8], tail: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(header);
    h.update(tail);
    h.finalize().to_hex().to_string()
}

/// A shard file's length, and its index (header, line ends, seps, block sums) against its
/// manifest entry.
fn check_index(file: &File, info: &ShardInfo, width: u32) -> std::result::Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != info.bytes {
        return Err(format!("{len} bytes, the manifest says {}", info.bytes));
    }
    let ids = layout_of(info, width)[0].clone();
    let mut header = vec![0u8; HEADER_BYTES];
    let mut tail = vec![0u8; len as usize - ids.end];
    file.read_exact_at(&mut header, 0)
        .and_then(|()| file.read_exact_at(&mut tail, ids.end as u64))
        .map_err(|e| format!("cannot read: {e}"))?;
    if index_hash(&header, &tail) != info.index_blake3 {
        return Err("its index differs from the manifest's checksum".into());
    }
    if header != header_bytes(width, info.tokens, info.lines, info.seps) {
        return Err("its header disagrees with the manifest".into());
    }
    Ok(())
}

/// Block `b` of a shard's ids (read with `pread` into `buf`) against its sum `want`.
fn check_block(
    file: &File,
    ids: &Range<usize>,
    b: usize,
    want: &[u8],
    buf: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let start = ids.start + b * BLOCK_BYTES;
    buf.resize(BLOCK_BYTES.min(ids.end - start), 0);
    file.read_exact_at(buf, start as u64)
        .map_err(|e| format!("cannot read: {e}"))?;
    if blake3::hash(buf).as_bytes() != want {
        return Err(format!("block {b} of its ids differs from its checksum"));
    }
    Ok(())
}

/// A whole shard: its index, then every block of ids.
fn check_whole(path: &Path, info: &ShardInfo, width: u32) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    check_index(&file, info, width)?;
    let [ids, _, _, sums] = layout_of(info, width);
    let mut stored = vec![0u8; sums.len()];
    file.read_exact_at(&mut stored, sums.start as u64)
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut buf = Vec::new();
    for (b, want) in stored.chunks_exact(32).enumerate() {
        check_block(&file, &ids, b, want, &mut buf)?;
    }
    Ok(())
}

/// A shard's 64-byte header.
pub fn header_bytes(width: u32, tokens: u64, lines: u64, seps: u64) -> Vec<u8> {
    let blocks = layout(width as usize, tokens, lines, seps)[0]
        .len()
        .div_ceil(BLOCK_BYTES) as u64;
    let mut b = Vec::with_capacity(HEADER_BYTES);
    b.extend_from_slice(SHARD_MAGIC);
    b.extend_from_slice(&width.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for x in [tokens, lines, seps, blocks] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.resize(HEADER_BYTES, 0);
    b
}

/// The default cache folder: `$XDG_CACHE_HOME/masklm`, else `~/.cache/masklm`. As the XDG
/// spec says, a relative `XDG_CACHE_HOME` is ignored (the cache would move with the working
/// folder); without a usable `HOME` either, `.cache/masklm` in the working folder, said once.
pub fn default_cache_dir() -> PathBuf {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(x) = absolute("XDG_CACHE_HOME") {
        return x.join("masklm");
    }
    if let Some(h) = absolute("HOME") {
        return h.join(".cache/masklm");
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        crate::errln!(
            "note: neither XDG_CACHE_HOME nor HOME is an absolute path, so the token stores go to \
             .cache/masklm in the working folder; set data.cache_dir to keep them in one place"
        )
    });
    PathBuf::from(".cache/masklm")
}

/// `12.3 MB` for messages.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `a.txt, b.txt` for messages, shortened for long lists.
pub fn describe(files: &[PathBuf]) -> String {
    let mut names: Vec<String> = files
        .iter()
        .take(3)
        .map(|f| f.display().to_string())
        .collect();
    if files.len() > 3 {
        names.push(format!("and {} more", files.len() - 3));
    }
    names.join(", ")
}

/// What a current store of `files` under `tok` must say in its manifest (shards aside).
fn expected(files: &[PathBuf], tok: &BertTokenizer, text_field: &str) -> Result<Manifest> {
    Ok(Manifest {
        format: FORMAT_VERSION,
        tokenizer: tok.fingerprint()?,
        text_field: text_field.to_string(),
        id_width: if tok.vocab_size() <= 1 << 16 { 2 } else { 4 },
        sources: Source::stat_all(files)?,
        shards: Vec::new(),
    })
}

/// The store of `files`: opened when current, else (re)built first. The flag says whether it
/// was built now.
pub fn open_or_prepare(
    files: &[PathBuf],
    tok: &BertTokenizer,
    text_field: &str,
    cache_dir: &Path,
) -> Result<(TokenStore, bool)> {
    let (dir, want) = locate(files, tok, text_field, cache_dir)?;
    match TokenStore::open_if_current(&dir, &want)? {
        Ok(store) => Ok((store, false)),
        Err(why) => {
            if why != NOT_PREPARED {
                crate::errln!("corpus store {}: {why}; tokenizing again", dir.display());
            }
            let built = super::prepare::prepare(files, tok, want, &dir, SHARD_TOKENS)?;
            // The sources stated again: a file changed while it was read makes the store stale.
            let now = Manifest {
                sources: Source::stat_all(files)?,
                shards: Vec::new(),
                ..built
            };
            let store = TokenStore::open_if_current(&dir, &now)?.map_err(|why| {
                UsageError::new(format!(
                    "the corpus store {} just written is not current: {why}; a corpus file \
                         changed while it was read (a log still being written?): give files that \
                         stay as they are, or a copy",
                    dir.display()
                ))
            })?;
            Ok((store, true))
        }
    }
}

//! A corpus as token ids, tokenized once and cached on disk.
//!
//! The cache key covers the content of every corpus file (in order) and the tokenizer's full
//! definition, so editing a file or changing the tokenizer misses the cache, while re-running
//! the same config hits it. Cache files end with a checksum: a damaged one is re-encoded.

use super::corpus::PieceReader;
use crate::error::UsageError;
use crate::tokenizer::BertTokenizer;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MLMENC01";
/// Texts handed to one parallel `encode_batch` call.
const ENCODE_BATCH_BYTES: usize = 4 << 20;

/// Token ids of every line of a corpus, concatenated, without special tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// `ids[line_ends[k-1]..line_ends[k]]` are line k's ids. Lines without tokens are dropped.
    pub line_ends: Vec<u64>,
}

impl Encoded {
    /// Streams `files` through the tokenizer in parallel batches (`text_field`: the text of
    /// `.jsonl` records).
    pub fn from_files(files: &[PathBuf], tok: &BertTokenizer, text_field: &str) -> Result<Encoded> {
        let mut out = Encoded {
            ids: Vec::new(),
            line_ends: Vec::new(),
        };
        let mut texts: Vec<String> = Vec::new();
        let mut bytes = 0;
        let flush = |texts: &mut Vec<String>, out: &mut Encoded| -> Result<()> {
            let encoded = tok.encode_batch(texts.iter().map(String::as_str).collect())?;
            for ids in encoded.into_iter().filter(|ids| !ids.is_empty()) {
                out.ids.extend_from_slice(&ids);
                out.line_ends.push(out.ids.len() as u64);
            }
            texts.clear();
            Ok(())
        };
        for piece in PieceReader::new(files.to_vec(), text_field) {
            let piece = piece?;
            bytes += piece.text.len();
            texts.push(piece.text);
            if bytes >= ENCODE_BATCH_BYTES {
                flush(&mut texts, &mut out)?;
                bytes = 0;
            }
        }
        flush(&mut texts, &mut out)?;
        if out.ids.is_empty() {
            return Err(UsageError::new(format!(
                "corpus {} contains no tokens; give files with text in them",
                describe(files)
            ))
            .into());
        }
        Ok(out)
    }

    /// [`Encoded::from_files`] through the cache in `cache_dir`; the flag says whether the
    /// cache held it (no tokenization ran).
    pub fn cached(
        files: &[PathBuf],
        tok: &BertTokenizer,
        text_field: &str,
        cache_dir: &Path,
    ) -> Result<(Encoded, bool)> {
        let path = cache_path(files, tok, text_field, cache_dir)?;
        if path.exists() {
            match read_cache(&path) {
                Ok(e) => return Ok((e, true)),
                Err(e) => eprintln!(
                    "warning: rebuilding damaged corpus cache {}: {e:#}",
                    path.display()
                ),
            }
        }
        let enc = Self::from_files(files, tok, text_field)?;
        // A cache that cannot be written (read-only disk) costs speed, not correctness.
        if let Err(e) = crate::io::write_atomic(&path, &to_bytes(&enc)) {
            eprintln!(
                "warning: cannot write corpus cache {}: {e:#}",
                path.display()
            );
        }
        Ok((enc, false))
    }
}

/// The cache file of `files` under `tok`: named by a digest of every file's content and name, in
/// order (the name says how the file is read: `.jsonl`, `.gz`), the tokenizer's full definition
/// and `text_field`.
pub fn cache_path(
    files: &[PathBuf],
    tok: &BertTokenizer,
    text_field: &str,
    cache_dir: &Path,
) -> Result<PathBuf> {
    let key = cache_key(files, tok, text_field)?;
    Ok(cache_dir.join(format!("encoded-{}.bin", &key[..32])))
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

/// The default cache folder: `$XDG_CACHE_HOME/masklm`, else `~/.cache/masklm`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("masklm");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/masklm"),
        None => PathBuf::from(".cache/masklm"),
    }
}

fn cache_key(files: &[PathBuf], tok: &BertTokenizer, text_field: &str) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(MAGIC);
    h.update(tok.fingerprint()?.as_bytes());
    h.update(&(text_field.len() as u64).to_le_bytes());
    h.update(text_field.as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file = std::fs::File::open(f).map_err(|e| {
            UsageError::new(format!("cannot open corpus file {}: {e}", f.display()))
        })?;
        let mut len = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", f.display()))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            h.update(&buf[..n]);
        }
        // The length separates files, so moving text from one file to the next changes the key;
        // the extension decides how the bytes are read.
        h.update(&len.to_le_bytes());
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        h.update(name.rsplit('.').next().unwrap_or_default().as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

fn to_bytes(e: &Encoded) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + e.ids.len() * 4 + e.line_ends.len() * 8 + 32);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(e.ids.len() as u64).to_le_bytes());
    b.extend_from_slice(&(e.line_ends.len() as u64).to_le_bytes());
    e.ids
        .iter()
        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    e.line_ends
        .iter()
        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

fn read_cache(path: &Path) -> Result<Encoded> {
    let b = std::fs::read(path)?;
    anyhow::ensure!(
        b.len() >= 56 && &b[..8] == MAGIC,
        "not a masklm corpus cache"
    );
    let (body, sum) = b.split_at(b.len() - 32);
    anyhow::ensure!(blake3::hash(body).as_bytes() == sum, "checksum mismatch");
    let n_ids = u64::from_le_bytes(body[8..16].try_into()?) as usize;
    let n_lines = u64::from_le_bytes(body[16..24].try_into()?) as usize;
    anyhow::ensure!(
        body.len() == 24 + n_ids * 4 + n_lines * 8,
        "length mismatch"
    );
    let (ids_b, lines_b) = body[24..].split_at(n_ids * 4);
    let ids = ids_b
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let line_ends = lines_b
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok(Encoded { ids, line_ends })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_bytes_round_trip_and_detect_damage() {
        let e = Encoded {
            ids: vec![5, 6, 7, 99],
            line_ends: vec![1, 4],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.bin");
        std::fs::write(&p, to_bytes(&e)).unwrap();
        assert_eq!(read_cache(&p).unwrap(), e);
        let mut b = to_bytes(&e);
        b[30] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(read_cache(&p).is_err());
    }
}

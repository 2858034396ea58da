//! Corpus files → pieces of text, streamed.
//!
//! A corpus PATH is a file or a folder (every `*.txt` below it, in sorted order). Text is UTF-8;
//! a blank line (empty or whitespace only) separates documents. Files are read line by line
//! through a bounded buffer: a line longer than [`MAX_PIECE_BYTES`] is cut (at whitespace when
//! there is some) into several pieces, so a 200 MB line without a newline never sits in memory
//! whole. Cutting at whitespace changes no token, since BERT's pre-tokenizer splits there anyway.

use crate::error::UsageError;
use anyhow::Result;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The longest piece handed to the tokenizer at once.
pub const MAX_PIECE_BYTES: usize = 1 << 16;

/// Expands each PATH into files: a file stays itself, a folder gives every `*.txt` below it,
/// sorted. Missing paths and folders without text files are usage errors that name the path.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| {
            UsageError::new(format!("corpus path {} cannot be read: {e}", p.display()))
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect_txt(p, &mut found)?;
            if found.is_empty() {
                return Err(UsageError::new(format!(
                    "corpus folder {} contains no .txt files; point at a .txt file or a folder of them",
                    p.display()
                ))
                .into());
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn collect_txt(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| UsageError::new(format!("cannot list folder {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_txt(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "txt") {
            out.push(path);
        }
    }
    Ok(())
}

/// One piece of text and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// True for the first piece of a document (after a blank line or at a file's start).
    pub new_doc: bool,
}

/// Streams the pieces of `files` in order. Invalid UTF-8 is an error naming the file and the
/// byte offset.
pub struct PieceReader {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<FileState>,
}

struct FileState {
    path: PathBuf,
    reader: BufReader<File>,
    /// Bytes read but not yet emitted (a partial line, or the tail after a cut).
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    offset: u64,
    /// The next piece starts a document.
    at_doc_start: bool,
    /// The previous piece was cut from a longer line: the next one continues it.
    mid_line: bool,
}

impl PieceReader {
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self {
            files,
            next_file: 0,
            current: None,
        }
    }

    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Ok(false);
        };
        self.next_file += 1;
        let f = File::open(&path).map_err(|e| {
            UsageError::new(format!("cannot open corpus file {}: {e}", path.display()))
        })?;
        self.current = Some(FileState {
            path,
            reader: BufReader::with_capacity(1 << 20, f),
            pending: Vec::new(),
            offset: 0,
            at_doc_start: true,
            mid_line: false,
        });
        Ok(true)
    }

    fn next_piece(&mut self) -> Result<Option<Piece>> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let st = self.current.as_mut().expect("opened above");
            match st.next_raw()? {
                None => self.current = None,
                Some((text, blank)) => {
                    if blank {
                        st.at_doc_start = true;
                        continue;
                    }
                    let new_doc = std::mem::replace(&mut st.at_doc_start, false);
                    return Ok(Some(Piece { text, new_doc }));
                }
            }
        }
    }
}

impl Iterator for PieceReader {
    type Item = Result<Piece>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_piece().transpose()
    }
}

impl FileState {
    /// The next line or cut piece, and whether it is blank. `None` at end of file.
    fn next_raw(&mut self) -> Result<Option<(String, bool)>> {
        let room = MAX_PIECE_BYTES.saturating_sub(self.pending.len()) as u64;
        let n = (&mut self.reader)
            .take(room)
            .read_until(b'\n', &mut self.pending)
            .map_err(|e| UsageError::new(format!("reading {}: {e}", self.path.display())))?;
        if self.pending.is_empty() && n == 0 {
            return Ok(None);
        }
        // Shorter than the limit means read_until stopped at a newline or at the end of the file.
        let whole_line =
            self.pending.last() == Some(&b'\n') || self.pending.len() < MAX_PIECE_BYTES;
        let cut = if whole_line {
            self.pending.len()
        } else {
            cut_point(&self.pending)
        };
        let rest = self.pending.split_off(cut);
        let bytes = std::mem::replace(&mut self.pending, rest);
        let start = self.offset;
        self.offset += bytes.len() as u64;
        let text = String::from_utf8(bytes).map_err(|e| {
            UsageError::new(format!(
                "{} is not valid UTF-8 at byte offset {}; convert it (e.g. iconv -f latin1 -t utf-8)",
                self.path.display(),
                start + e.utf8_error().valid_up_to() as u64
            ))
        })?;
        let continues = std::mem::replace(&mut self.mid_line, !whole_line);
        let trimmed = text.trim_end_matches(['\n', '\r']);
        // A blank line ends a document; an all-space piece cut from a long line does not.
        let blank = !continues && whole_line && trimmed.trim().is_empty();
        Ok(Some((trimmed.to_string(), blank)))
    }
}

/// Where to cut a full buffer: after the last ASCII whitespace in its second half, else at the
/// last UTF-8 character boundary, so a piece never splits a character.
fn cut_point(buf: &[u8]) -> usize {
    let half = buf.len() / 2;
    if let Some(i) = buf[half..].iter().rposition(|b| b.is_ascii_whitespace()) {
        return half + i + 1;
    }
    // No whitespace: cut before the last byte that starts a character (not 0b10xx_xxxx), looking
    // back at most 4 bytes; an invalid sequence is left whole for the UTF-8 check to report.
    (buf.len().saturating_sub(4)..buf.len())
        .rev()
        .find(|&i| i > 0 && (buf[i] & 0xC0) != 0x80)
        .unwrap_or(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pieces_of(bytes: &[u8]) -> Result<Vec<Piece>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        PieceReader::new(vec![p]).collect()
    }

    #[test]
    fn blank_lines_separate_documents() {
        let got = pieces_of(b"a b\nc\n\n \r\nd\r\ne").unwrap();
        let want = [("a b", true), ("c", false), ("d", true), ("e", false)];
        assert_eq!(got.len(), want.len());
        for (g, (t, d)) in got.iter().zip(want) {
            assert_eq!((g.text.as_str(), g.new_doc), (t, d));
        }
    }

    #[test]
    fn long_line_is_cut_at_whitespace_without_losing_bytes() {
        let word = "héllo ";
        let line: String = word.repeat(3 * MAX_PIECE_BYTES / word.len());
        let got = pieces_of(format!("{line}\nnext\n").as_bytes()).unwrap();
        assert!(got.len() >= 4, "{} pieces", got.len());
        assert!(got.iter().all(|p| p.text.len() <= MAX_PIECE_BYTES));
        let joined: String = got[..got.len() - 1]
            .iter()
            .map(|p| p.text.as_str())
            .collect();
        assert_eq!(joined, line);
        assert!(got[0].new_doc && got[1..].iter().all(|p| !p.new_doc));
    }

    #[test]
    fn long_line_without_whitespace_is_cut_at_char_boundaries() {
        let line = "é".repeat(MAX_PIECE_BYTES); // 2 bytes each
        let got = pieces_of(line.as_bytes()).unwrap();
        let joined: String = got.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, line);
    }

    #[test]
    fn invalid_utf8_names_file_and_offset() {
        let err = pieces_of(b"ok line\nbad \xff here\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.txt") && err.contains("byte offset 12"),
            "{err}"
        );
    }

    #[test]
    fn folder_expands_to_sorted_txt_files_and_missing_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", "skip.md"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let files = expand_paths(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        let missing = dir.path().join("nope.txt");
        let err = expand_paths(&[missing]).unwrap_err().to_string();
        assert!(err.contains("nope.txt"), "{err}");
    }
}

//! Corpus files → pieces of text, streamed.
//!
//! A corpus PATH is a file or a folder (every corpus file below it, in sorted order; hidden
//! entries skipped). Formats, by file name in any case: plain text (`.txt`, or any other name),
//! where a blank line (empty or whitespace only) separates documents; JSON Lines (`.jsonl`, or
//! `.json` named on its own), one document, as one line, per record in its text field
//! (`data.text_field`, `"text"` by default, as HF `datasets` writes it); and either of them compressed, `.gz` or
//! `.zst`, decoded as it streams (`corpus.jsonl.zst`). Text is UTF-8. A line ends at "\n",
//! "\r\n" or a lone "\r" (old Mac OS files), as Python's universal newlines, with which HF
//! `datasets` reads text files, end it.
//! Files are read line by line through a bounded buffer: a line longer than [`MAX_PIECE_BYTES`]
//! is cut (at whitespace when there is some) into several pieces, so a 200 MB line without a
//! newline never sits in memory whole. Cutting at whitespace changes no token, since BERT's
//! pre-tokenizer splits there anyway.

use crate::error::UsageError;
use anyhow::Result;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest piece handed to the tokenizer at once.
pub const MAX_PIECE_BYTES: usize = 1 << 16;

/// The longest JSON Lines record read: a record is parsed whole to find its text field.
pub const MAX_JSONL_RECORD: u64 = 64 << 20;

/// The JSON field of a `.jsonl` record that holds its text, unless `data.text_field` names another.
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// A file's name in lowercase and, for a compressed file, that name without `.gz` / `.zst`:
/// suffixes are matched whatever their case (`A.TXT`, `b.JSONL.GZ`).
fn names(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_lowercase();
    let inner = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name)
        .to_string();
    (name, inner)
}

/// Whether a file name is a corpus file a folder expands to.
fn is_corpus_file(path: &Path) -> bool {
    let (_, inner) = names(path);
    inner.ends_with(".txt") || inner.ends_with(".jsonl")
}

/// Whether a corpus file holds JSON Lines: `.jsonl`, or `.json` named on its own (HF's
/// `Dataset.to_json` writes JSON Lines there; a folder expands to `.jsonl` only, as its `.json`
/// files are more often configs).
fn is_json_lines(path: &Path) -> bool {
    let (_, inner) = names(path);
    inner.ends_with(".jsonl") || inner.ends_with(".json")
}

/// The command-line tool that tests a compressed corpus file (`gzip`, `zstd`), by its suffix.
fn decompressor(path: &Path) -> Option<&'static str> {
    let (name, _) = names(path);
    if name.ends_with(".gz") {
        Some("gzip")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    }
}

/// The text stream of one corpus file: decompressed by its last suffix (`.gz`, `.zst`), then,
/// for `.jsonl`, the text field of each record as one line followed by a blank line (a record is
/// a document).
/// `read`: a counter of the file's bytes read (compressed bytes for a compressed file).
fn open_text(
    path: &Path,
    text_field: &str,
    read: Arc<AtomicU64>,
) -> Result<Box<dyn BufRead + Send>> {
    let f = File::open(path)
        .map_err(|e| UsageError::new(format!("cannot open corpus file {}: {e}", path.display())))?;
    let f = Counted { inner: f, read };
    let raw: Box<dyn Read + Send> =
        match decompressor(path) {
            Some("gzip") => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Some(_) => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| {
                UsageError::new(format!("{} is not zstd data: {e}", path.display()))
            })?),
            None => Box::new(f),
        };
    let reader = BufReader::with_capacity(1 << 20, raw);
    if is_json_lines(path) {
        let text = JsonlText::new(reader, path, text_field);
        Ok(Box::new(BufReader::with_capacity(1 << 16, text)))
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that adds what it reads to a shared counter (for progress bars).
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A JSON Lines record that cannot be read; its message names the file and the line.
#[derive(Debug)]
struct BadRecord(String);

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRecord {}

/// Reads JSON Lines as text: each record's `field`, then a blank line. Blank lines between
/// records are skipped; a malformed record, a record without the field or with a non-string
/// field is an `InvalidData` error naming the file, the line and the fix.
struct JsonlText<R> {
    lines: R,
    path: PathBuf,
    field: String,
    line_no: u64,
    record: Vec<u8>,
    /// Text of the current record not yet read out, and where it starts.
    out: Vec<u8>,
    at: usize,
}

impl<R: BufRead> JsonlText<R> {
    fn new(lines: R, path: &Path, field: &str) -> Self {
        Self {
            lines,
            path: path.to_path_buf(),
            field: field.to_string(),
            line_no: 0,
            record: Vec::new(),
            out: Vec::new(),
            at: 0,
        }
    }

    fn bad(&self, what: String) -> std::io::Error {
        let msg = format!("{} line {}: {what}", self.path.display(), self.line_no);
        std::io::Error::new(std::io::ErrorKind::InvalidData, BadRecord(msg))
    }

    /// Loads the next record's text into `out`; false at the end of the file.
    fn next_record(&mut self) -> std::io::Result<bool> {
        loop {
            self.record.clear();
            let n = (&mut self.lines)
                .take(MAX_JSONL_RECORD + 1)
                .read_until(b'\n', &mut self.record)?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            // A UTF-8 byte order mark (Windows editors write one) before the first record.
            if self.line_no == 1 && self.record.starts_with(b"\xef\xbb\xbf") {
                self.record.drain(..3);
            }
            if self.record.len() as u64 > MAX_JSONL_RECORD {
                let limit = crate::io::size_words(MAX_JSONL_RECORD);
                return Err(self.bad(format!("a record longer than {limit}; split the document")));
            }
            if self.record.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&self.record).map_err(|e| {
                self.bad(format!(
                    "not valid JSON ({e}); each line must be one JSON object"
                ))
            })?;
            let Some(record) = v.as_object() else {
                return Err(self.bad(format!(
                    "the record is not a JSON object but {}; each line must be one object whose \
                     \"{}\" field holds the text",
                    json_kind(&v),
                    self.field
                )));
            };
            let Some(field) = record.get(&self.field) else {
                return Err(self.bad(format!(
                    "the record has no \"{}\" field; name the field that holds the text with \
                     --set data.text_field=NAME (masklm tokenizer: --text-field NAME)",
                    self.field
                )));
            };
            let Some(text) = field.as_str() else {
                return Err(self.bad(format!(
                    "field \"{}\" is {}, not a string; give the text as a string (\"\" for none), \
                     or name the field that holds it with --set data.text_field=NAME",
                    self.field,
                    json_kind(field)
                )));
            };
            // A record is one document and one line (one row in line packing, as HF's
            // `--line_by_line` takes a JSON record whole): its lines, split as a file's are ("\r"
            // included), are joined with spaces, which BERT's pre-tokenizer splits at as it does
            // at line ends; blank ones are dropped. The one blank line after it is its only
            // document end.
            self.out.clear();
            for line in text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
                if !self.out.is_empty() {
                    self.out.push(b' ');
                }
                self.out.extend_from_slice(line.as_bytes());
            }
            if !self.out.is_empty() {
                self.out.push(b'\n');
            }
            self.out.push(b'\n');
            self.at = 0;
            return Ok(true);
        }
    }
}

impl<R: BufRead> Read for JsonlText<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.out.len() && !self.next_record()? {
            return Ok(0);
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A JSON value's kind, for messages: "a number", "null", "an array".
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Expands each PATH into files: a file stays itself, a folder gives every corpus file below it
/// (`*.txt`, `*.jsonl`, and those with `.gz` or `.zst`), sorted, skipping hidden entries
/// (`.git`, `.ipynb_checkpoints`, macOS's `__MACOSX`) and folders already walked (a link back to
/// a parent). Usage errors, naming the path: a missing path, a folder without corpus files, a
/// FIFO or device, a name that is not UTF-8 (the store's manifest records names), and a file
/// reached twice (`a.txt` and `./a.txt`, a folder and a file in it), whose text would be trained
/// on twice.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| {
            UsageError::new(format!("corpus path {} cannot be read: {e}", p.display()))
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect_txt(p, &mut found, &mut Vec::new())?;
            if found.is_empty() {
                // Files of other names (WikiText's .raw) are read as text when named one by one.
                let mut others: Vec<String> = std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                others.sort();
                let hint = match others.len() {
                    0 => String::new(),
                    n => format!(
                        "; it holds {}{} (a file named on its own is read as plain text, \
                         whatever its extension)",
                        others[..n.min(3)].join(", "),
                        if n > 3 {
                            format!(" and {} more", n - 3)
                        } else {
                            String::new()
                        },
                    ),
                };
                return Err(UsageError::new(format!(
                    "corpus folder {} contains no corpus files (.txt, .jsonl, or either with .gz \
                     or .zst){hint}; point at such a file or a folder of them",
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
    let mut seen = std::collections::HashMap::new();
    for f in &files {
        if f.to_str().is_none() {
            crate::usage!(
                "corpus file {} has a name that is not UTF-8; rename it",
                f.display()
            );
        }
        // A FIFO or a device would block the reader or never end.
        let meta = std::fs::metadata(f).ok().filter(|m| m.is_file());
        let Some(meta) = meta else {
            crate::usage!(
                "corpus path {} is not a regular file; give text files or folders of them",
                f.display()
            );
        };
        if let Some(first) = seen.insert(file_identity(f, &meta), f) {
            crate::usage!(
                "corpus file {} is listed twice (also as {}), so its text would be read twice \
                 (trained on or scored twice); list each file once",
                f.display(),
                first.display()
            );
        }
    }
    Ok(files)
}

/// What names one file however it is reached (`a.txt`, `./a.txt`, a link, a hard link): its
/// device and inode, from the metadata at hand (canonicalizing the path would cost a system call
/// per path component: seconds for a corpus of 200,000 files).
#[cfg(unix)]
fn file_identity(_: &Path, meta: &std::fs::Metadata) -> (u64, u64, PathBuf) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino(), PathBuf::new())
}

#[cfg(not(unix))]
fn file_identity(f: &Path, _: &std::fs::Metadata) -> (u64, u64, PathBuf) {
    (0, 0, f.canonicalize().unwrap_or_else(|_| f.to_path_buf()))
}

/// The folder among `paths` whose walk ([`expand_paths`]) would read `file` (which may not exist
/// yet) as a corpus file once it is written: `file`, its links and `..` resolved as making its
/// missing folders would resolve them, lies in a folder the walk visits (it follows links, so a
/// link inside a corpus folder leads the walk elsewhere), and not below a hidden one.
pub fn folder_holding(paths: &[PathBuf], file: &Path) -> Option<PathBuf> {
    let file = resolved(file)?;
    paths
        .iter()
        .filter(|p| p.is_dir())
        .find(|dir| {
            // The folders the walk visits, resolved; an unreadable one ends it, as it ends the
            // walk of the run, which then reports it.
            let mut walked = Vec::new();
            let _ = collect_txt(dir, &mut Vec::new(), &mut walked);
            file.ancestors()
                .skip(1)
                .any(|a| walked.iter().any(|w| w == a) && file.strip_prefix(a).is_ok_and(is_walked))
        })
        .cloned()
}

/// Whether the walk of a corpus folder ([`collect_txt`]) reaches `below` (a path inside the
/// folder): none of its parts is hidden.
fn is_walked(below: &Path) -> bool {
    below.components().all(|c| {
        let n = c.as_os_str().to_string_lossy();
        !n.starts_with('.') && n != "__MACOSX"
    })
}

/// `path` with its longest existing part resolved (links, `..`) and the rest folded by name,
/// as making the missing folders would give it.
fn resolved(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    let parts: Vec<Component> = path.components().collect();
    (1..=parts.len()).rev().find_map(|n| {
        let real = parts[..n].iter().collect::<PathBuf>().canonicalize().ok()?;
        Some(fold(real, parts[n..].iter().copied()))
    })
}

/// `base` with `parts` appended, `.` dropped and `..` taking off the last part.
fn fold<'a>(mut base: PathBuf, parts: impl Iterator<Item = Component<'a>>) -> PathBuf {
    for c in parts {
        match c {
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir => {}
            c => base.push(c),
        }
    }
    base
}

/// Adds the corpus files below `dir` to `out`; `walked`: the folders walked so far, resolved.
fn collect_txt(dir: &Path, out: &mut Vec<PathBuf>, walked: &mut Vec<PathBuf>) -> Result<()> {
    if let Ok(real) = dir.canonicalize() {
        if walked.contains(&real) {
            return Ok(());
        }
        walked.push(real);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| UsageError::new(format!("cannot list folder {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || name == "__MACOSX" {
            continue;
        }
        // The listing's own file type where it has one: a stat per file only for links.
        let is_dir = match entry.file_type() {
            Ok(t) if !t.is_symlink() => t.is_dir(),
            _ => path.is_dir(),
        };
        if is_dir {
            collect_txt(&path, out, walked)?;
        } else if is_corpus_file(&path) {
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
    /// True for a piece cut from the same line as the piece before (a line over
    /// [`MAX_PIECE_BYTES`]).
    pub continues: bool,
}

/// Streams the pieces of `files` in order. Invalid UTF-8 is an error naming the file and the
/// byte offset (of the decoded text, for compressed and JSON Lines files).
pub struct PieceReader {
    files: Vec<PathBuf>,
    text_field: String,
    next_file: usize,
    current: Option<FileState>,
    read: Arc<AtomicU64>,
}

struct FileState {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Bytes read but not yet emitted (a partial line, or the tail after a cut).
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    offset: u64,
    /// The next piece starts a document.
    at_doc_start: bool,
    /// The previous piece was cut from a longer line: the next one continues it.
    mid_line: bool,
    /// The previous line ended at a "\r": a "\n" right after it belongs to that line end.
    after_cr: bool,
}

impl PieceReader {
    /// `text_field`: the field holding the text of `.jsonl` records.
    pub fn new(files: Vec<PathBuf>, text_field: &str) -> Self {
        Self {
            files,
            text_field: text_field.to_string(),
            next_file: 0,
            current: None,
            read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A counter of the bytes read from the files so far (as stored: compressed bytes for a
    /// compressed file), to show progress against their total size from another thread.
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    fn open_next(&mut self) -> Result<bool> {
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Ok(false);
        };
        self.next_file += 1;
        let reader = open_text(&path, &self.text_field, self.read.clone())?;
        self.current = Some(FileState {
            path,
            reader,
            pending: Vec::new(),
            offset: 0,
            at_doc_start: true,
            mid_line: false,
            after_cr: false,
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
                Some((text, blank, continues)) => {
                    if blank {
                        st.at_doc_start = true;
                        continue;
                    }
                    let new_doc = std::mem::replace(&mut st.at_doc_start, false);
                    return Ok(Some(Piece {
                        text,
                        new_doc,
                        continues,
                    }));
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
    /// The next line or cut piece, whether it is blank and whether it continues the line of the
    /// piece before. `None` at end of file.
    fn next_raw(&mut self) -> Result<Option<(String, bool, bool)>> {
        let read_error = |e: std::io::Error| {
            if let Some(bad) = e.get_ref().and_then(|r| r.downcast_ref::<BadRecord>()) {
                UsageError::new(bad.to_string())
            } else if let Some(tool) = decompressor(&self.path) {
                UsageError::new(format!(
                    "reading {0}: {e}; the compressed file is damaged or truncated (check it \
                     with {tool} -t {0}; download or compress it again)",
                    self.path.display()
                ))
            } else {
                UsageError::new(format!("reading {}: {e}", self.path.display()))
            }
        };
        if std::mem::take(&mut self.after_cr) {
            let buf = self.reader.fill_buf().map_err(read_error)?;
            if buf.first() == Some(&b'\n') {
                self.reader.consume(1);
                self.offset += 1;
            }
        }
        let room = MAX_PIECE_BYTES.saturating_sub(self.pending.len()) as u64;
        let n =
            read_line(&mut (&mut self.reader).take(room), &mut self.pending).map_err(read_error)?;
        if self.pending.is_empty() && n == 0 {
            return Ok(None);
        }
        // Shorter than the limit means read_line stopped at a line end or at the end of the file.
        let ends_line = matches!(self.pending.last(), Some(b'\n' | b'\r'));
        let whole_line = ends_line || self.pending.len() < MAX_PIECE_BYTES;
        self.after_cr = self.pending.last() == Some(&b'\r');
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
            let at = start + e.utf8_error().valid_up_to() as u64;
            let path = self.path.display();
            let convert = "convert it (e.g. iconv -f latin1 -t utf-8)";
            // A damaged compressed file without checksums decodes to garbage, not to an error.
            UsageError::new(match decompressor(&self.path) {
                Some(tool) => format!(
                    "{path} is not valid UTF-8 at byte offset {at} of its decompressed text: \
                     the file is damaged (check it with {tool} -t {path}) or in another \
                     encoding ({convert})"
                ),
                None => format!("{path} is not valid UTF-8 at byte offset {at}; {convert}"),
            })
        })?;
        let continues = std::mem::replace(&mut self.mid_line, !whole_line);
        let trimmed = text.trim_end_matches(['\n', '\r']);
        // A blank line ends a document; an all-space piece cut from a long line does not.
        let blank = !continues && whole_line && trimmed.trim().is_empty();
        Ok(Some((trimmed.to_string(), blank, continues)))
    }
}

/// Appends to `buf` the bytes of `r` up to and including the next "\n" or "\r" (the end of the
/// input otherwise), returning how many; 0 at the end of the input. A "\n" after a "\r" is the
/// caller's to skip.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = buf.len();
    loop {
        let chunk = match r.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let (n, ended) = match memchr::memchr2(b'\n', b'\r', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..n]);
        r.consume(n);
        if ended {
            break;
        }
    }
    Ok(buf.len() - start)
}

/// Where to cut a full buffer so that BERT's pre-tokenizer finds the same words as in the whole
/// line: after the last ASCII whitespace in its second half; else after the last character
/// there at which it splits anyway (any Unicode whitespace, punctuation as `BertPreTokenizer`
/// tells it, a CJK ideograph, which BERT's normalizer sets apart); else at the last UTF-8
/// character boundary, so a piece never splits a character (a run of 32 KiB without any such
/// character is cut inside a word).
fn cut_point(buf: &[u8]) -> usize {
    let half = buf.len() / 2;
    // Not `is_ascii_whitespace`: its form feed is a control character, which BERT's normalizer
    // removes, joining the words on either side.
    if let Some(i) = buf[half..]
        .iter()
        .rposition(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return half + i + 1;
    }
    // The second half from its first character on, as far as it is valid UTF-8.
    let start = (half..buf.len())
        .find(|&i| (buf[i] & 0xC0) != 0x80)
        .unwrap_or(buf.len());
    let tail = &buf[start..];
    let valid = std::str::from_utf8(tail)
        .unwrap_or_else(|e| std::str::from_utf8(&tail[..e.valid_up_to()]).unwrap_or_default());
    if let Some((i, c)) = valid.char_indices().rev().find(|&(_, c)| splits_words(c)) {
        return start + i + c.len_utf8();
    }
    // Cut before the last byte that starts a character (not 0b10xx_xxxx), looking back at most
    // 4 bytes; an invalid sequence is left whole for the UTF-8 check to report.
    (buf.len().saturating_sub(4)..buf.len())
        .rev()
        .find(|&i| i > 0 && (buf[i] & 0xC0) != 0x80)
        .unwrap_or(buf.len())
}

/// Whether BERT's tokenizer ends a word at `c` whatever comes next: whitespace (as the
/// `BertNormalizer` tells it: tab, newline, carriage return, or whitespace that is not a control
/// character, since those it removes), punctuation (tokenizers' `BertPreTokenizer`: ASCII
/// punctuation or a Unicode P* category) or a CJK ideograph (its `handle_chinese_chars` ranges).
fn splits_words(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    matches!(c, '\t' | '\n' | '\r')
        || (c.is_whitespace() && !c.is_other())
        || c.is_ascii_punctuation()
        || c.is_punctuation()
        || matches!(c as u32,
            0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pieces_of(bytes: &[u8]) -> Result<Vec<Piece>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        PieceReader::new(vec![p], DEFAULT_TEXT_FIELD).collect()
    }

    fn texts(pieces: &[Piece]) -> Vec<(String, bool)> {
        pieces.iter().map(|p| (p.text.clone(), p.new_doc)).collect()
    }

    fn read(dir: &Path, name: &str, bytes: &[u8], field: &str) -> Result<Vec<Piece>> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        PieceReader::new(vec![p], field).collect()
    }

    #[test]
    fn jsonl_and_compressed_files_read_as_the_same_text() {
        let dir = tempfile::tempdir().unwrap();
        let plain = "first doc.\nits second line\n\nsecond doc: \"quoted\", é\n";
        let want = texts(&read(dir.path(), "a.txt", plain.as_bytes(), "text").unwrap());
        assert_eq!(want.len(), 3);
        // One record per document; a blank line between records is allowed; other fields ignored.
        // A record's lines are one line.
        let jsonl = concat!(
            r#"{"id": 1, "text": "first doc.\nits second line"}"#,
            "\n\n",
            r#"{"text": "second doc: \"quoted\", \u00e9", "meta": {"x": [1]}}"#,
            "\n"
        );
        let want_jsonl = [
            ("first doc. its second line".to_string(), true),
            (want[2].0.clone(), true),
        ];
        let got = read(dir.path(), "a.jsonl", jsonl.as_bytes(), "text").unwrap();
        assert_eq!(texts(&got), want_jsonl);
        let other = jsonl.replace("\"text\"", "\"body\"");
        let got = read(dir.path(), "b.jsonl", other.as_bytes(), "body").unwrap();
        assert_eq!(texts(&got), want_jsonl);
        // A byte order mark before the first record is not part of it.
        let bom = [b"\xef\xbb\xbf".as_slice(), jsonl.as_bytes()].concat();
        let got = read(dir.path(), "bom.jsonl", &bom, "text").unwrap();
        assert_eq!(texts(&got), want_jsonl);

        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let zst = |b: &[u8]| zstd::encode_all(b, 3).unwrap();
        for (name, bytes) in [
            ("c.txt.gz", gz(plain.as_bytes())),
            ("c.txt.zst", zst(plain.as_bytes())),
            ("c.jsonl.gz", gz(jsonl.as_bytes())),
            ("c.jsonl.zst", zst(jsonl.as_bytes())),
        ] {
            let got = read(dir.path(), name, &bytes, "text").unwrap();
            let want = if name.contains("jsonl") {
                &want_jsonl[..]
            } else {
                &want[..]
            };
            assert_eq!(texts(&got), want, "{name}");
        }
    }

    #[test]
    fn damaged_compressed_files_name_the_file_and_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let text = "some words of a document\n".repeat(4000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(text.as_bytes(), 3).unwrap();
        // Without a frame checksum (zstd's default), a changed byte decodes to other bytes: the
        // error is then the text's UTF-8 check, which names the damage as one cause.
        let mut flipped = zst.clone();
        flipped[zst.len() / 2] ^= 0xff;
        for (name, bytes, tool) in [
            ("cut.txt.gz", &gz[..gz.len() / 2], "gzip -t"),
            ("cut.txt.zst", &zst[..zst.len() / 2], "zstd -t"),
            ("flipped.txt.zst", &flipped[..], "zstd -t"),
        ] {
            let e = read(dir.path(), name, bytes, "text").unwrap_err();
            let msg = format!("{e:#}");
            assert!(e.downcast_ref::<UsageError>().is_some(), "{msg}");
            assert!(msg.contains(name) && msg.contains(tool), "{msg}");
            assert!(msg.contains("damaged"), "{msg}");
        }
    }

    #[test]
    fn bad_jsonl_records_name_the_file_the_line_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "{\"text\": \"ok\"}\n{\"text\": \"cut\n",
                "line 2",
                "not valid JSON",
            ),
            (
                "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n",
                "line 3",
                "data.text_field",
            ),
            ("{\"text\": 5}\n", "line 1", "not a string"),
        ];
        for (i, (body, line, why)) in cases.into_iter().enumerate() {
            let name = format!("bad{i}.jsonl");
            let e = read(dir.path(), &name, body.as_bytes(), "text").unwrap_err();
            let msg = format!("{e:#}");
            assert!(e.downcast_ref::<UsageError>().is_some(), "{msg}");
            for needle in [name.as_str(), line, why] {
                assert!(msg.contains(needle), "{needle:?} not in {msg}");
            }
        }
        // A damaged compressed file is an error too, not garbage text.
        let e = read(dir.path(), "x.txt.gz", b"not gzip at all", "text").unwrap_err();
        assert!(format!("{e:#}").contains("x.txt.gz"), "{e:#}");
    }

    #[test]
    fn blank_lines_separate_documents() {
        let got = pieces_of(b"a b\nc\n\n \r\nd\r\ne\rf\r\rg\r").unwrap();
        let want = [
            ("a b", true),
            ("c", false),
            ("d", true),
            ("e", false),
            ("f", false),
            ("g", true),
        ];
        assert_eq!(got.len(), want.len());
        for (g, (t, d)) in got.iter().zip(want) {
            assert_eq!((g.text.as_str(), g.new_doc), (t, d));
        }
    }

    #[test]
    fn a_crlf_split_by_the_piece_limit_is_one_line_end() {
        // The "\r" fills the buffer to the limit; the "\n" after it must not read as a blank line.
        let mut text = vec![b'w'; MAX_PIECE_BYTES - 1];
        text.extend_from_slice(b"\r\nx\r\ny");
        let got = texts(&pieces_of(&text).unwrap());
        let long = "w".repeat(MAX_PIECE_BYTES - 1);
        assert_eq!(
            got,
            [(long, true), ("x".into(), false), ("y".into(), false)]
        );
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
        // The pieces after the first continue its line; the next line does not.
        let n = got.len();
        assert!(!got[0].continues && got[1..n - 1].iter().all(|p| p.continues));
        assert!(!got[n - 1].continues);
    }

    #[test]
    fn long_line_without_whitespace_is_cut_at_char_boundaries() {
        let line = "é".repeat(MAX_PIECE_BYTES); // 2 bytes each
        let got = pieces_of(line.as_bytes()).unwrap();
        let joined: String = got.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, line);
    }

    #[test]
    fn long_line_is_cut_where_bert_splits_words_anyway() {
        // No ASCII whitespace, but a no-break space, a Japanese full stop or an ideograph
        // between words: each piece ends with one, never inside a word.
        for sep in ["\u{a0}", "。", "中"] {
            let word = format!("Hello{sep}");
            let line = word.repeat(3 * MAX_PIECE_BYTES / word.len());
            let got = pieces_of(line.as_bytes()).unwrap();
            assert!(got.len() >= 3, "{} pieces", got.len());
            assert!(got.iter().all(|p| p.text.ends_with(sep)), "{sep:?}");
            let joined: String = got.iter().map(|p| p.text.as_str()).collect();
            assert_eq!(joined, line);
        }
        assert!(!splits_words('a') && !splits_words('ア') && !splits_words('\u{301}'));
        // Control characters BERT's normalizer removes, joining the words around them.
        assert!(!['\u{b}', '\u{c}', '\u{85}'].into_iter().any(splits_words));
        assert!(['\t', '\u{3000}', '\u{2003}'].into_iter().all(splits_words));
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
        for name in [
            "b.txt",
            "a.txt",
            "skip.md",
            "c.jsonl",
            "d.txt.gz",
            "e.jsonl.zst",
            "f.gz",
            "G.TXT",
            "h.json",
            ".hidden.txt",
            ".ipynb_checkpoints/a-checkpoint.txt",
            "__MACOSX/._a.txt",
            "sub/i.txt",
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        // A link back to the folder is walked once, not until the OS refuses the path.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
        let files = expand_paths(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "G.TXT",
                "a.txt",
                "b.txt",
                "c.jsonl",
                "d.txt.gz",
                "e.jsonl.zst",
                "sub/i.txt"
            ]
        );
        let missing = dir.path().join("nope.txt");
        let err = expand_paths(&[missing]).unwrap_err().to_string();
        assert!(err.contains("nope.txt"), "{err}");
        // A file reached twice would be trained on twice.
        let a = dir.path().join("a.txt");
        // A hard link is the same text under another name.
        let hard = dir.path().join("hard-link-to-a");
        std::fs::hard_link(&a, &hard).unwrap();
        for twice in [
            vec![a.clone(), dir.path().join("./sub/../a.txt")],
            vec![dir.path().to_path_buf(), dir.path().join("sub/i.txt")],
            vec![a.clone(), hard.clone()],
        ] {
            let e = expand_paths(&twice).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
            assert!(e.to_string().contains("listed twice"), "{e:#}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn a_file_the_walk_of_a_corpus_folder_would_read_is_found_however_it_is_named() {
        let root = tempfile::tempdir().unwrap();
        let (corpus, elsewhere) = (root.path().join("corpus"), root.path().join("elsewhere"));
        std::fs::create_dir_all(&corpus).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, corpus.join("link")).unwrap();
        std::os::unix::fs::symlink(&corpus, root.path().join("corpus-link")).unwrap();
        let held = |paths: &[PathBuf], file: &str| folder_holding(paths, &root.path().join(file));
        let folder = [corpus.clone()];
        for file in [
            "corpus/run/metrics.jsonl",
            // `..` after folders that do not exist yet.
            "corpus/new/../run/metrics.jsonl",
            "elsewhere/../corpus/run/metrics.jsonl",
            // A link inside the folder: the walk follows it, to where it points.
            "corpus/link/metrics.jsonl",
            "elsewhere/run/metrics.jsonl",
        ] {
            assert_eq!(held(&folder, file), Some(corpus.clone()), "{file}");
        }
        // The folder named through a link.
        let via_link = [root.path().join("corpus-link")];
        assert!(held(&via_link, "corpus/run/metrics.jsonl").is_some());
        for file in [
            "corpus/../run/metrics.jsonl",
            // Hidden folders are not walked.
            "corpus/.runs/a/metrics.jsonl",
            "corpus/__MACOSX/metrics.jsonl",
        ] {
            assert_eq!(held(&folder, file), None, "{file}");
        }
    }

    #[test]
    fn a_json_lines_record_is_one_document_and_one_line_whatever_its_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = concat!(
            r#"{"text": "Para one.\n\nPara two.\n \nPara three.\r\rPara four."}"#,
            "\n",
            r#"{"text": "next"}"#,
            "\n"
        );
        // `.json` named on its own is JSON Lines too, as HF's Dataset.to_json writes it.
        for name in ["a.jsonl", "a.JSON"] {
            let got = read(dir.path(), name, jsonl.as_bytes(), "text").unwrap();
            let want = [
                ("Para one. Para two. Para three. Para four.", true),
                ("next", true),
            ]
            .map(|(t, d)| (t.to_string(), d));
            assert_eq!(texts(&got), want, "{name}");
        }
    }
}

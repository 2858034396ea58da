//! File writes that a crash or kill at any instant cannot leave half-done, and reads of small
//! structured files (configs, tokenizers) that refuse a huge file instead of loading it.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest JSON or TOML settings file read (config.json, tokenizer_config.json, a masklm
/// config): real ones are a few KB.
pub const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// The largest tokenizer.json or vocab.txt read: BERT's are under 1 MB, a 250k-token
/// multilingual tokenizer.json is about 17 MB.
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// `limit` in words, for messages: "64 KiB", "1 MiB", "64 MiB" (whole KiB or MiB, as the limits
/// are).
pub fn size_words(limit: u64) -> String {
    if limit >= 1 << 20 {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit >> 10)
    }
}

/// The error of a file over its size limit; `size` is the byte count, or what is known of it.
fn too_large(size: impl std::fmt::Display, limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!("it is {size} bytes, over the {} limit", size_words(limit)),
    )
}

/// `fs::read_to_string` that refuses a file over `limit` bytes before reading it (or, for a pipe
/// or a file that grows, after reading `limit + 1` bytes): the error is
/// [`std::io::ErrorKind::FileTooLarge`] and says the size and the limit. Invalid UTF-8 is
/// `InvalidData`, as with `fs::read_to_string`.
pub fn read_to_string_capped(path: &Path, limit: u64) -> std::io::Result<String> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(meta.len(), limit));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(format!("over {limit}"), limit));
    }
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (byte offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Refuses a regular file over `limit` bytes without reading it, for files handed to a library
/// that reads them itself (vocab.txt to `tokenizers`).
pub fn ensure_at_most(path: &Path, limit: u64) -> std::io::Result<()> {
    let meta = fs::metadata(path)?;
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(meta.len(), limit));
    }
    Ok(())
}

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The end of the input: nothing was read.
    End,
    /// A line, now in the buffer without its `\n`.
    Read,
    /// A line longer than the cap; the buffer holds its first `cap + 1` bytes, the rest is unread.
    TooLong,
}

/// Reads one line of `reader` into `buf` (cleared first), holding at most `cap + 1` bytes of it,
/// so that a huge input without newlines is refused instead of loaded.
pub fn read_line_capped(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    cap: u64,
) -> std::io::Result<Line> {
    use std::io::BufRead;
    buf.clear();
    let n = reader.take(cap + 1).read_until(b'\n', buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(Line::Read)
    } else if n == 0 {
        Ok(Line::End)
    } else if n as u64 > cap {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Read) // the last line, without a newline
    }
}

/// Creates `dir` and whichever of its ancestors are missing, as `fs::create_dir_all` does, and
/// returns the folders it made, innermost first, for [`remove_made`] to take back when the
/// command then fails: a failed command leaves no new empty folders behind.
pub fn make_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    // Past a `..`, an ancestor that does not exist yet (`new/..`) names a folder that may
    // exist (`new/../mine` is `mine`): such a path is made but not taken back.
    let plain = !dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| plain && !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir)?;
    Ok(missing)
}

/// Removes the folders [`make_dirs`] made, innermost first, as long as they are empty (another
/// process may have put something in one meanwhile: that one and its parents stay).
pub fn remove_made(made: &[PathBuf]) {
    for d in made {
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return,
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
/// Readers see either the old file or the new one, never a prefix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_with(path, |tmp| {
        fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))
    })
}

/// [`write_atomic`] for files that belong together (a run's two charts): every file is written
/// and synced beside its path first, and only then are they renamed over their paths, so a
/// failed write (a full disk) replaces none of them. A kill or a failed rename between the
/// renames can still leave some new beside some old (the temporaries not renamed are removed).
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut made = Vec::new();
    let mut written: Vec<(PathBuf, &Path)> = Vec::new();
    let result = (|| -> Result<()> {
        for &(path, bytes) in files {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir {
                made.extend(
                    make_dirs(dir).with_context(|| format!("creating folder {}", dir.display()))?,
                );
            }
            let (prefix, suffix) = tmp_affixes(path);
            remove_dead_temporaries(dir.unwrap_or(Path::new(".")), &prefix, &suffix);
            let tmp = tmp_path(path);
            written.push((tmp.clone(), path));
            fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in &written {
            let _ = fs::remove_file(tmp);
        }
        remove_made(&made);
        return Err(e);
    }
    for (i, (tmp, path)) in written.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            for (left, _) in &written[i..] {
                let _ = fs::remove_file(left);
            }
            return Err(e)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
        }
    }
    Ok(())
}

/// [`write_atomic`] for writers that want a path: `write` fills the temporary file (a hidden
/// sibling of `path` with the same extension), which is then synced and renamed over `path`.
/// On error the temporary file is removed and `path` is untouched; a killed writer's is removed
/// by the next writer of `path`.
pub fn replace_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let made = match dir {
        Some(dir) => {
            make_dirs(dir).with_context(|| format!("creating folder {}", dir.display()))?
        }
        None => Vec::new(),
    };
    let (prefix, suffix) = tmp_affixes(path);
    remove_dead_temporaries(dir.unwrap_or(Path::new(".")), &prefix, &suffix);
    let tmp = tmp_path(path);
    let result = (|| -> Result<()> {
        write(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        remove_made(&made);
    }
    result
}

/// The name of [`write_folder`]'s hidden folder inside an existing `out`, before the process id.
pub const FOLDER_TMP_PREFIX: &str = ".masklm.tmp-";

/// Writes the files of folder `out`: `write` fills a hidden temporary folder (the files inside
/// need no atomic writes of their own) and returns their names in the order written; they are
/// then synced and moved into `out`. A new `out` is that folder, a sibling `.NAME.tmp-PID`
/// renamed to `out` in one step; into an existing `out` (empty, or a `--force`) the folder is
/// `out/.masklm.tmp-PID` and its files are renamed over `out`'s one by one, the last written
/// last (each file they replace kept as a hard link, and put back if a later one fails), so `out` itself (a mount point, a link, the current folder, a folder in a parent this
/// process cannot write in) is never replaced and keeps its owner and permissions. A killed
/// writer leaves no half folder at a new `out`, only the hidden one, which the next writer of
/// `out` removes. On error the temporary folder is removed and `out` is untouched.
///
/// `replace` (the caller's `--force`) allows files already in `out`; without it the caller has
/// found `out` absent or empty. Two processes writing one `out` move their files in one at a
/// time (an advisory lock on `out`'s parent folder), so `out` ends as one write or the other,
/// never a mix; without `replace`, one that finds files in `out` by then (another process wrote
/// them meanwhile) refuses, leaving them.
pub fn write_folder(
    out: &Path,
    replace: bool,
    write: impl FnOnce(&Path) -> Result<Vec<String>>,
) -> Result<()> {
    let pid = std::process::id();
    let mut made = Vec::new();
    let (tmp, into_existing) = if out.is_dir() {
        remove_dead_temporaries(out, FOLDER_TMP_PREFIX, "");
        (out.join(format!("{FOLDER_TMP_PREFIX}{pid}")), true)
    } else {
        // `e/.` is `e` (renaming `e/.` fails).
        let out: &Path = &out.components().collect::<PathBuf>();
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no folder name", out.display()))?;
        let parent = out.parent().filter(|d| !d.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        made = make_dirs(parent).with_context(|| format!("creating {}", parent.display()))?;
        remove_dead_temporaries(parent, &format!(".{name}.tmp-"), "");
        (parent.join(format!(".{name}.tmp-{pid}")), false)
    };
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        let names = write(&tmp)?;
        // Every file as readable as any file this process creates (burn-store writes its
        // safetensors owner-only, 0600).
        let probe = tmp.join(".mode");
        let mode = File::create(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.permissions());
        let _ = fs::remove_file(&probe);
        for n in &names {
            let path = tmp.join(n);
            if let Ok(mode) = &mode {
                fs::set_permissions(&path, mode.clone())
                    .with_context(|| format!("setting the permissions of {}", path.display()))?;
            }
            File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
        // `e/.` is `e`; a bare name's parent is the current folder.
        let whole: PathBuf = out.components().collect();
        let parent = match whole.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let _lock = File::open(parent)
            .and_then(|f| f.lock().map(|()| f))
            .with_context(|| format!("locking {}", parent.display()))?;
        // Files in `out`, writers' temporaries aside.
        let holds_files = fs::read_dir(out).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(FOLDER_TMP_PREFIX)
            })
        });
        if !replace && holds_files {
            return Err(crate::error::UsageError::new(format!(
                "{} was written by another process while this one was writing; it is left as \
                 that one wrote it: run again with --force to replace it",
                out.display()
            ))
            .into());
        }
        let into_existing = into_existing || out.is_dir();
        if !into_existing {
            return fs::rename(&tmp, out)
                .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()));
        }
        // Each file `out` already has is first hard-linked into `tmp` (it stays in place, so a
        // kill never leaves one missing): when a later file cannot be moved in, those replaced
        // so far are put back, and `out` is as it was, not a mix of two writes that would load
        // without an error. Where a link cannot be made (a file system without them), the new
        // file stays: nothing is lost, though the folder is then mixed.
        let prev = |i: usize| tmp.join(format!(".prev-{i}"));
        // (index, name, whether `out` had the file, whether a link to it was kept)
        let mut moved: Vec<(usize, &String, bool, bool)> = Vec::new();
        let placed = (|| -> Result<()> {
            for (i, n) in names.iter().enumerate() {
                let dest = out.join(n);
                let had = dest.symlink_metadata().is_ok();
                let kept = had && fs::hard_link(&dest, prev(i)).is_ok();
                fs::rename(tmp.join(n), &dest)
                    .with_context(|| format!("moving {} into {}", n, out.display()))?;
                moved.push((i, n, had, kept));
            }
            Ok(())
        })();
        if placed.is_err() {
            for &(i, n, had, kept) in moved.iter().rev() {
                let _ = match (had, kept) {
                    (_, true) => fs::rename(prev(i), out.join(n)),
                    (false, _) => fs::remove_file(out.join(n)),
                    (true, false) => Ok(()),
                };
            }
        }
        placed?;
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        remove_made(&made);
    }
    result
}

/// Removes the files and folders `dir/PREFIX<pid>SUFFIX` whose process is gone (killed
/// writers'); those of live processes (another writer of the same output, now) are left alone.
fn remove_dead_temporaries(dir: &Path, prefix: &str, suffix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_dead_temporary(&name, prefix, suffix) {
            let path = e.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
        }
    }
}

/// Whether `name` is `PREFIX<pid>SUFFIX`, a temporary of a process that no longer runs.
pub fn is_dead_temporary(name: &str, prefix: &str, suffix: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(prefix)
        .and_then(|p| p.strip_suffix(suffix))
        .and_then(|p| p.parse::<u64>().ok())
    else {
        return false;
    };
    process_gone(pid)
}

/// Whether no process `pid` runs, so what it named after itself is left over.
pub fn process_gone(pid: u64) -> bool {
    // Past what a process id can be (Linux caps them at 2^22): none.
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    // SAFETY: kill with signal 0 only asks whether the process exists. EPERM: it exists,
    // another user's (a shared output folder), so its temporaries are live too.
    let alive = pid == std::process::id() as i32
        || unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// Refuses, before any work, an output folder that cannot be made or written in: `dir` or one
/// of its ancestors is a file, or the nearest existing one is a folder this process cannot
/// write in. `what` names the option or key (`--out`, `train.out_dir`).
pub fn check_output_dir(dir: &Path, what: &str) -> Result<(), crate::error::UsageError> {
    let fix = format!("choose another {what}");
    refuse_dangling_links(dir, dir, what)?;
    let nearest = nearest_existing(dir).map_err(|(i, a)| {
        crate::error::UsageError::new(if i == 0 {
            format!("{what} {} is a file, not a folder; {fix}", dir.display())
        } else {
            format!(
                "{what} {}: {} is a file, so no folder can be made under it; {fix}",
                dir.display(),
                a.display()
            )
        })
    })?;
    check_writable(&nearest, dir, what)
}

/// Refuses `dir` when it or an ancestor is a link to nothing (or a link loop): it is not there
/// to `exists()`, yet no folder can be made in its place. `out` and `what` name the output.
fn refuse_dangling_links(
    dir: &Path,
    out: &Path,
    what: &str,
) -> Result<(), crate::error::UsageError> {
    let dangling = dir
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && !a.exists() && a.symlink_metadata().is_ok());
    match dangling {
        None => Ok(()),
        Some(link) => Err(crate::error::UsageError::new(format!(
            "{what} {}: {} is a link to {}, which does not exist; make that folder or choose \
             another {what}",
            out.display(),
            link.display(),
            fs::read_link(link).unwrap_or_default().display()
        ))),
    }
}

/// The nearest of `dir` and its ancestors that exists, when it is a folder (`.` for a relative
/// path none of whose ancestors exists); else which ancestor (0: `dir` itself) is a file.
fn nearest_existing(dir: &Path) -> Result<PathBuf, (usize, PathBuf)> {
    for (i, a) in dir.ancestors().enumerate() {
        if a.as_os_str().is_empty() || !a.exists() {
            continue;
        }
        return if a.is_dir() {
            Ok(a.to_path_buf())
        } else {
            Err((i, a.to_path_buf()))
        };
    }
    Ok(PathBuf::from("."))
}

/// Refuses an output under the existing folder `nearest` when a file cannot be created there
/// (permissions, a read-only file system): [`can_create_in`].
fn check_writable(nearest: &Path, out: &Path, what: &str) -> Result<(), crate::error::UsageError> {
    can_create_in(nearest).map_err(|e| {
        crate::error::UsageError::new(format!(
            "{what} {}: cannot write in {} ({e}); make it writable or choose another {what}",
            out.display(),
            nearest.display()
        ))
    })
}

/// Whether a file can be created in the existing folder `dir`: found by creating and removing an
/// empty hidden file, since permission bits alone do not say (root, ACLs, read-only mounts).
pub fn can_create_in(dir: &Path) -> std::io::Result<()> {
    // A killed check's probe goes with the next check in the folder.
    remove_dead_temporaries(dir, ".masklm-write-check-", "");
    let probe = dir.join(format!(".masklm-write-check-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Refuses, before any work, an output file path that names a folder (an existing one, or one
/// written with a trailing `/`) or lies under a file. `example` is a file name to suggest.
pub fn check_output_file(
    path: &Path,
    what: &str,
    example: &str,
) -> Result<(), crate::error::UsageError> {
    let text = path.as_os_str().to_string_lossy();
    if path.is_dir() || text.ends_with('/') || path.file_name().is_none() {
        return Err(crate::error::UsageError::new(format!(
            "{what} {} is a folder; give a file path such as {}",
            path.display(),
            path.join(example).display()
        )));
    }
    // A device, FIFO or socket (or a link to one): replacing it would take a node that is not
    // the user's file, writing through it would not keep the output.
    if path.metadata().is_ok_and(|m| !m.is_file()) {
        return Err(crate::error::UsageError::new(format!(
            "{what} {} is not a regular file (a device, FIFO or socket); give a file path such as \
             {example}",
            path.display(),
        )));
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    refuse_dangling_links(dir, path, what)?;
    let nearest = nearest_existing(dir).map_err(|_| {
        crate::error::UsageError::new(format!(
            "{what} {}: {} is not a folder that can be made (a file is in the way); \
             choose another {what}",
            path.display(),
            dir.display()
        ))
    })?;
    check_writable(&nearest, path, what)
}

/// `dir/.stem.tmp-PID.ext`: hidden, unique per process so two writers never share one, and with
/// the original extension (readers that go by it, as image viewers do, still know the file).
pub fn tmp_path(path: &Path) -> PathBuf {
    let (prefix, suffix) = tmp_affixes(path);
    path.with_file_name(format!("{prefix}{}{suffix}", std::process::id()))
}

/// What comes before and after the process id in [`tmp_path`]'s name: `.stem.tmp-` and `.ext`.
fn tmp_affixes(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (format!(".{stem}.tmp-"), ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.txt");
        write_atomic(&p, b"one").unwrap();
        // A killed writer's temporary (a process id that does not exist) goes with the next write.
        let dead = (100_000..4_000_000)
            .find(|&p| unsafe { libc::kill(p, 0) } != 0)
            .unwrap();
        let stale = dir.path().join(format!("sub/.x.tmp-{dead}.txt"));
        fs::write(&stale, b"half").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!stale.exists(), "the dead writer's temporary is removed");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.txt")]);
    }

    #[test]
    fn a_folder_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hf");
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let two = |text: &'static str| {
            move |tmp: &Path| -> Result<Vec<String>> {
                fs::write(tmp.join("a.json"), text)?;
                fs::write(tmp.join("b.json"), text)?;
                Ok(vec!["a.json".into(), "b.json".into()])
            }
        };
        // A killed writer's leftover (a process id that does not exist) is removed.
        let dead = (100_000..4_000_000)
            .find(|&p| unsafe { libc::kill(p, 0) } != 0)
            .unwrap();
        let stale = dir.path().join(format!(".hf.tmp-{dead}"));
        fs::create_dir(&stale).unwrap();
        write_folder(&out, false, two("one")).unwrap();
        assert_eq!(names(&out), ["a.json", "b.json"]);
        assert_eq!(names(dir.path()), ["hf"], "no temporary folder left");

        // A failing writer leaves `out` as it was.
        let failed = write_folder(&out, true, |tmp| {
            fs::write(tmp.join("a.json"), "half")?;
            anyhow::bail!("disk full")
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(out.join("a.json")).unwrap(), "one");
        assert_eq!(names(dir.path()), ["hf"]);

        // Into a non-empty folder: the written files are replaced, the others kept.
        fs::write(out.join("README.md"), "mine").unwrap();
        write_folder(&out, true, two("two")).unwrap();
        assert_eq!(names(&out), ["README.md", "a.json", "b.json"]);
        assert_eq!(fs::read_to_string(out.join("b.json")).unwrap(), "two");
        assert_eq!(names(dir.path()), ["hf"]);

        // A file that cannot be moved in (here: its folder in `out` is missing) puts back the
        // ones already replaced: never a mix of two writes.
        let failed = write_folder(&out, true, |tmp| {
            fs::write(tmp.join("a.json"), "mixed")?;
            fs::create_dir(tmp.join("sub"))?;
            fs::write(tmp.join("sub/c.json"), "mixed")?;
            Ok(vec!["a.json".into(), "sub/c.json".into()])
        });
        assert!(failed.is_err());
        assert_eq!(names(&out), ["README.md", "a.json", "b.json"]);
        assert_eq!(fs::read_to_string(out.join("a.json")).unwrap(), "two");

        // Another process wrote `out` while this one was writing (here: from inside `write`):
        // refused without `replace`, leaving the other's files; replaced whole with it.
        let other = dir.path().join("other");
        let meanwhile = |text: &'static str| {
            let other = other.clone();
            move |tmp: &Path| -> Result<Vec<String>> {
                fs::create_dir_all(&other)?;
                fs::write(other.join("a.json"), "theirs")?;
                fs::write(tmp.join("a.json"), text)?;
                Ok(vec!["a.json".into()])
            }
        };
        let e = write_folder(&other, false, meanwhile("ours")).unwrap_err();
        assert!(
            e.downcast_ref::<crate::error::UsageError>().is_some(),
            "{e:#}"
        );
        assert!(
            e.to_string().contains("written by another process"),
            "{e:#}"
        );
        assert_eq!(fs::read_to_string(other.join("a.json")).unwrap(), "theirs");
        assert_eq!(names(&other), ["a.json"], "no temporary left");
        fs::remove_dir_all(&other).unwrap();
        write_folder(&other, true, meanwhile("ours")).unwrap();
        assert_eq!(fs::read_to_string(other.join("a.json")).unwrap(), "ours");
        assert_eq!(names(&other), ["a.json"]);

        // An existing folder is written into, never replaced: a link to one stays a link (so
        // does a mount point, the current folder, a folder in a parent that cannot be written
        // in), and a killed writer's leftover inside it goes.
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::create_dir(real.join(format!(".masklm.tmp-{dead}"))).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_folder(&link, false, two("three")).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(names(&real), ["a.json", "b.json"]);
        assert_eq!(fs::read_to_string(real.join("a.json")).unwrap(), "three");
    }

    #[test]
    fn output_paths_under_a_file_are_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, "x").unwrap();
        let free = dir.path().join("new/deeper");
        assert!(check_output_dir(&free, "--out").is_ok());
        assert!(check_output_dir(dir.path(), "--out").is_ok());
        let e = check_output_dir(&file, "train.out_dir")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is a file, not a folder") && e.contains("train.out_dir"),
            "{e}"
        );
        let e = check_output_dir(&file.join("run/x"), "--out")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a-file is a file, so no folder"), "{e}");
        // A link to nothing, as the folder or above it.
        #[cfg(unix)]
        {
            let link = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
            for out in [link.clone(), link.join("run")] {
                let e = check_output_dir(&out, "train.out_dir")
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("dangling is a link to") && e.contains("nowhere"),
                    "{e}"
                );
            }
        }
        assert!(check_output_file(&free.join("tokenizer.json"), "--out", "t.json").is_ok());
        let e = check_output_file(&file.join("tokenizer.json"), "--out", "t.json").unwrap_err();
        assert!(e.to_string().contains("a file is in the way"), "{e}");
        // A folder nobody can create files in (even root): /proc.
        #[cfg(target_os = "linux")]
        for e in [
            check_output_dir(Path::new("/proc/masklm-run"), "train.out_dir").unwrap_err(),
            check_output_file(Path::new("/proc/t.json"), "tokenizer.path", "t.json").unwrap_err(),
        ] {
            assert!(e.to_string().contains("cannot write in /proc"), "{e}");
        }
        // A device, and a link to one: never replaced by --force.
        #[cfg(unix)]
        {
            let link = dir.path().join("null.json");
            std::os::unix::fs::symlink("/dev/null", &link).unwrap();
            for p in [Path::new("/dev/null"), &link] {
                let e = check_output_file(p, "--out", "tokenizer.json").unwrap_err();
                assert!(e.to_string().contains("is not a regular file"), "{e}");
            }
        }
        for folder in [dir.path().to_path_buf(), free.join("sub/")] {
            let e = check_output_file(&folder, "tokenizer.path", "tokenizer.json").unwrap_err();
            assert!(
                e.to_string().contains("is a folder; give a file path"),
                "{e}"
            );
        }
    }

    #[test]
    fn capped_read_refuses_large_files_and_names_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        fs::write(&p, "0123456789").unwrap();
        assert_eq!(read_to_string_capped(&p, 10).unwrap(), "0123456789");
        let e = read_to_string_capped(&p, 9).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(e.to_string().contains("10 bytes"), "{e}");
        assert_eq!(
            [
                size_words(64 << 10),
                size_words(1 << 20),
                size_words(64 << 20)
            ],
            ["64 KiB", "1 MiB", "64 MiB"]
        );
        assert!(ensure_at_most(&p, 10).is_ok());
        assert_eq!(
            ensure_at_most(&p, 9).unwrap_err().kind(),
            std::io::ErrorKind::FileTooLarge
        );
        fs::write(&p, b"ab\xffc").unwrap();
        let e = read_to_string_capped(&p, 10).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("byte offset 2"), "{e}");
    }

    #[test]
    fn capped_lines_end_at_the_cap() {
        let mut input: &[u8] = b"abc\nabcd\nabcde\n";
        let mut buf = Vec::new();
        let mut next = || read_line_capped(&mut input, &mut buf, 4).unwrap();
        assert_eq!(next(), Line::Read);
        assert_eq!(next(), Line::Read);
        assert_eq!(next(), Line::TooLong);
        let mut last: &[u8] = b"ab\n\nlast";
        let got: Vec<(Line, Vec<u8>)> = (0..4)
            .map(|_| {
                let l = read_line_capped(&mut last, &mut buf, 4).unwrap();
                (l, buf.clone())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Line::Read, b"ab".to_vec()),
                (Line::Read, vec![]),
                (Line::Read, b"last".to_vec()),
                (Line::End, vec![]),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn capped_read_stops_a_stream_at_the_limit() {
        // /dev/zero never ends and has no length: the cap is what stops the read.
        let e = read_to_string_capped(Path::new("/dev/zero"), 1 << 10).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_failed_write_takes_back_the_folders_it_made() {
        let root = tempfile::tempdir().unwrap();
        let made = make_dirs(&root.path().join("a/b/c")).unwrap();
        let rel: Vec<_> = made
            .iter()
            .map(|d| d.strip_prefix(root.path()).unwrap())
            .collect();
        assert_eq!(rel, [Path::new("a/b/c"), Path::new("a/b"), Path::new("a")]);
        assert!(make_dirs(&root.path().join("a/b")).unwrap().is_empty());
        // Something another process put in a/b keeps it, and a, in place.
        fs::write(root.path().join("a/b/theirs"), "").unwrap();
        remove_made(&made);
        assert!(!root.path().join("a/b/c").exists() && root.path().join("a/b/theirs").exists());

        // Past a `..`, a folder that exists may be named through one that does not: kept.
        fs::create_dir(root.path().join("mine")).unwrap();
        let made = make_dirs(&root.path().join("new/../mine/deep")).unwrap();
        assert!(made.is_empty());
        remove_made(&made);
        assert!(root.path().join("mine/deep").is_dir());

        let failing = |_: &Path| -> Result<()> { anyhow::bail!("disk full") };
        assert!(replace_with(&root.path().join("x/y/file.json"), failing).is_err());
        assert!(
            write_folder(&root.path().join("p/q/out"), false, |_| anyhow::bail!("no")).is_err()
        );
        assert!(!root.path().join("x").exists() && !root.path().join("p").exists());
    }

    #[test]
    fn files_written_together_replace_all_or_none() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a.png"), root.path().join("new/b.png"));
        fs::write(&a, "old a").unwrap();
        // The second cannot be written (a file where its folder goes): the first stays old.
        fs::write(root.path().join("blocked"), "").unwrap();
        let blocked = root.path().join("blocked/b.png");
        assert!(write_all_atomic(&[(&a, b"new a"), (&blocked, b"new b")]).is_err());
        assert_eq!(fs::read_to_string(&a).unwrap(), "old a");
        let names: Vec<String> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
        // Both written, the folder made.
        write_all_atomic(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(fs::read_to_string(&b).unwrap(), "new b");
    }
}

//! The token store: ids read back equal the tokenizer's, with a [SEP] exactly at each document's
//! end in packed rows; an altered or truncated shard is named and rebuilt, an edited corpus or
//! another tokenizer rebuilds; JSON Lines and compressed corpora give the ids of the same plain
//! text, and a malformed one leaves no store behind.

use crate::common::{self, masklm};
use masklm::config::Packing;
use masklm::data::batches::RowSet;
use masklm::data::prepare;
use masklm::data::store::{self, TokenStore};
use masklm::error::UsageError;
use masklm::tokenizer::{BertTokenizer, WordPieceTraining};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tokenizer(vocab: usize) -> BertTokenizer {
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    masklm::data::train_tokenizer(&[corpus], &WordPieceTraining::new(vocab, true), "text").unwrap()
}

/// A corpus of documents (separated by blank lines, some of several lines, one line of
/// control characters only, which has no ids) and the ids each document's lines should get.
fn corpus(dir: &Path, tok: &BertTokenizer) -> (PathBuf, Vec<Vec<Vec<u32>>>) {
    let text = "once upon a time there was a girl.\nshe had a red ball\n\n\
                \n  \nthe dog ran to the park. it was sunny!\n\u{1}\u{2}\n\n\
                tom and sue played all day long with their big blue boat\n\
                a\n\nthe end\n";
    let path = dir.join("c.txt");
    std::fs::write(&path, text).unwrap();
    let docs = text
        .split("\n\n")
        .map(|d| {
            d.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| tok.encode_batch(vec![l]).unwrap().remove(0))
                .filter(|ids| !ids.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect();
    (path, docs)
}

/// [`corpus`] in a temporary folder, with a cache folder beside it and a tokenizer of 300.
fn small_corpus() -> (tempfile::TempDir, PathBuf, BertTokenizer, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tok = tokenizer(300);
    let (path, _) = corpus(dir.path(), &tok);
    (dir, cache, tok, vec![path])
}

#[test]
fn ids_are_the_tokenizers_and_a_sep_ends_each_document_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer(300);
    let sep = tok.specials().sep;
    let (path, docs) = corpus(dir.path(), &tok);
    assert_eq!(docs.len(), 4);
    let files = vec![path];
    let lines: Vec<&Vec<u32>> = docs.iter().flatten().collect();
    let packed: Vec<u32> = docs
        .iter()
        .flat_map(|d| d.iter().flatten().copied().chain([sep]))
        .collect();
    // Shards of ~7 ids: many shards, documents and rows running across them. u16 and u32 ids.
    for width in [2, 4] {
        let mut want = store::locate(&files, &tok, "text", dir.path()).unwrap().1;
        want.id_width = width;
        let at = dir.path().join(format!("store-{width}"));
        let m = prepare::prepare(&files, &tok, want.clone(), &at, 7).unwrap();
        assert!(m.shards.len() >= 4, "{} shards", m.shards.len());
        assert_eq!(m.documents(), docs.len() as u64);
        let s = TokenStore::open_if_current(&at, &want).unwrap().unwrap();
        assert_eq!(s.n_lines(), lines.len() as u64);
        for (k, line) in lines.iter().enumerate() {
            let mut out = vec![0; 1000];
            let n = s.fill_line(k as u64, &mut out).unwrap();
            assert_eq!(&out[..n], line.as_slice(), "line {k}");
        }
        assert_eq!(s.packed_len(), packed.len() as u64);
        for start in 0..packed.len() {
            for len in [1, 5, packed.len() - start] {
                let len = len.min(packed.len() - start);
                let mut out = vec![0; len];
                s.fill_packed(start as u64, sep, &mut out).unwrap();
                assert_eq!(
                    out,
                    packed[start..start + len],
                    "width {width}, from {start}"
                );
            }
        }
        // Packed rows of seq_len 6: [CLS] + 4 ids of the stream + [SEP]; the short tail dropped.
        let rows = RowSet::all(Arc::new(s), Packing::Packed, 6);
        assert_eq!(rows.len(), packed.len() / 4);
        let sp = tok.specials();
        let (mut ids, mut mask) = (vec![0; 6], vec![0; 6]);
        for r in 0..rows.len() {
            rows.fill(r, &sp, &mut ids, &mut mask).unwrap();
            assert_eq!(ids[1..5], packed[4 * r..4 * r + 4]);
            assert_eq!((ids[0], ids[5], &mask[..]), (sp.cls, sp.sep, &[1u8; 6][..]));
        }
    }
}

#[test]
fn a_truncated_or_altered_shard_is_named_and_rebuilt() {
    let (_dir, cache, tok, files) = small_corpus();
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(built);
    let want = s.first_ids(usize::MAX).unwrap();
    let shard = s.dir().join(&s.manifest().shards[0].file);
    let dir_of = s.dir().to_path_buf();
    drop(s);
    let (_, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(!built, "a current store opens without tokenizing");

    // Truncated: seen at open (the length differs), named, and rebuilt.
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let why = TokenStore::open_if_current(
        &dir_of,
        &store::locate(&files, &tok, "text", &cache).unwrap().1,
    )
    .unwrap()
    .unwrap_err();
    assert!(why.contains("shard-00000.bin"), "{why}");
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(built);
    assert_eq!(s.first_ids(usize::MAX).unwrap(), want);
    drop(s);

    // A manifest whose counts disagree with the shard's length: stale, rebuilt.
    let manifest = dir_of.join(store::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: store::Manifest = serde_json::from_str(&text).unwrap();
    m.shards[0].lines += 1;
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(built);
    assert_eq!(s.first_ids(usize::MAX).unwrap(), want);
    drop(s);

    // Altered in place (same length): seen when the shard is first touched, named as a usage
    // error; the store is marked stale and the next open rebuilds it.
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(!built, "lengths and times match: opened");
    let e = s.first_ids(usize::MAX).unwrap_err();
    let msg = format!("{e:#}");
    assert!(e.downcast_ref::<UsageError>().is_some(), "{msg}");
    assert!(
        msg.contains("shard-00000.bin") && msg.contains("damaged"),
        "{msg}"
    );
    drop(s);
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(built, "the damaged store was rebuilt");
    assert_eq!(s.first_ids(usize::MAX).unwrap(), want);
    assert!(s.verify_all().0.is_empty());
    drop(s);

    // Rebuilt by another process after this one opened it (a shard this manifest does not
    // describe, under another manifest): said so, and the other's store is left alone.
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(!built);
    let mut m: store::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m.sources[0].mtime_ns += 1;
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let msg = format!("{:#}", s.first_ids(usize::MAX).unwrap_err());
    assert!(
        msg.contains("rebuilt or removed by another process"),
        "{msg}"
    );
    assert!(manifest.exists(), "the other process's store is kept");
}

#[test]
fn each_block_of_ids_is_checked_when_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let tok = tokenizer(300);
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    let files = vec![corpus];
    let (s, _) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    let info = s.manifest().shards[0].clone();
    let n_blocks = (info.tokens as usize * 2).div_ceil(store::BLOCK_BYTES);
    assert!(n_blocks >= 4, "{n_blocks} blocks");
    let shard = s.dir().join(&info.file);
    drop(s);
    // One id of the last block altered: rows before it read fine, a read of it is refused.
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = store::HEADER_BYTES + (n_blocks - 1) * store::BLOCK_BYTES + 1;
    bytes[at] ^= 0x01;
    std::fs::write(&shard, &bytes).unwrap();
    let (s, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(!built);
    let mut out = vec![0; 64];
    assert!(s.fill_line(0, &mut out).unwrap() > 0, "block 0 is intact");
    let e = s.first_ids(usize::MAX).unwrap_err();
    let msg = format!("{e:#}");
    let block = format!("block {}", n_blocks - 1);
    assert!(
        msg.contains("shard-00000.bin") && msg.contains(&block),
        "{msg}"
    );
    let (bad, marked) = s.verify_all();
    assert_eq!(bad.len(), 1);
    assert_eq!(marked, Ok(()));
}

#[test]
fn a_build_killed_midway_leaves_a_folder_the_next_build_removes() {
    let (_dir, cache, tok, files) = small_corpus();
    let (at, _) = store::locate(&files, &tok, "text", &cache).unwrap();
    let name = at.file_name().unwrap().to_string_lossy().into_owned();
    // No process has this id (Linux caps them at 2^22): its build was killed.
    let dead = cache.join(format!(".{name}.tmp-4000000000"));
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("shard-00000.bin"), b"half").unwrap();
    store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(!dead.exists());
    let names: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [at.file_name().unwrap()]);
}

#[test]
fn an_edited_corpus_or_another_tokenizer_rebuilds() {
    let (_dir, cache, tok, files) = small_corpus();
    let path = files[0].clone();
    let (first, _) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    let n = first.manifest().tokens();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\nand they lived happily\n");
    std::fs::write(&path, text).unwrap();
    let (edited, built) = store::open_or_prepare(&files, &tok, "text", &cache).unwrap();
    assert!(built, "an edited file rebuilds");
    assert_eq!(edited.dir(), first.dir(), "in place");
    assert!(edited.manifest().tokens() > n);
    let other = tokenizer(400);
    let (s, built) = store::open_or_prepare(&files, &other, "text", &cache).unwrap();
    assert!(built);
    assert_ne!(
        s.dir(),
        first.dir(),
        "another tokenizer has a store of its own"
    );
}

#[test]
fn jsonl_and_compressed_corpora_give_the_ids_of_the_plain_text() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = common::tiny_corpus();
    let plain = dir.path().join("c.txt");
    std::fs::write(&plain, &text).unwrap();
    // The same documents as JSON Lines: a record per document, documents being separated by
    // blank lines (empty or whitespace only).
    let mut docs: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        match line.trim().is_empty() {
            true if !docs.last().unwrap().is_empty() => docs.push(Vec::new()),
            true => {}
            false => docs.last_mut().unwrap().push(line),
        }
    }
    let jsonl: String = docs
        .iter()
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}\n", serde_json::json!({ "text": d.join("\n") })))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(jsonl.as_bytes()).unwrap();
    let variants = [
        ("c.jsonl", jsonl.as_bytes().to_vec()),
        ("c.jsonl.gz", gz.finish().unwrap()),
        ("c.txt.zst", zstd::encode_all(text.as_bytes(), 3).unwrap()),
    ];
    let tok = tokenizer(300);
    let sep = tok.specials().sep;
    let packed = |s: &TokenStore| {
        let mut out = vec![0; s.packed_len() as usize];
        s.fill_packed(0, sep, &mut out).unwrap();
        out
    };
    let (s, _) = store::open_or_prepare(&[plain], &tok, "text", &cache).unwrap();
    let want = packed(&s);
    assert!(want.len() > 10_000);
    for (name, bytes) in variants {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let (s, built) = store::open_or_prepare(&[p], &tok, "text", &cache).unwrap();
        assert!(built, "{name}: a store of its own");
        assert_eq!(packed(&s), want, "{name}");
    }

    // A malformed record: a usage error naming file and line, and nothing left in the cache.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": oops}\n").unwrap();
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let e = store::open_or_prepare(std::slice::from_ref(&bad), &tok, "text", &cache).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("bad.jsonl line 2"), "{msg}");
    assert!(e.downcast_ref::<UsageError>().is_some(), "{msg}");
    assert_eq!(listing(), before, "no store, no temporary folder");
}

#[test]
fn data_prepare_and_verify_name_a_damaged_shard_and_rebuild_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["data", "prepare", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    args.extend(common::isolated(dir.path()));
    // Nothing to verify yet: said as such, not as damage; verify trains no tokenizer.
    args[1] = "verify".into();
    masklm(&args).usage_error(&["tokenizer.json does not exist", "masklm data prepare"]);
    let tok = dir.path().join("tokenizer.json");
    assert!(!tok.exists());
    masklm(&[
        "tokenizer",
        "--corpus",
        "corpora/tinystories/tinystories-validation-head.txt",
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
    ])
    .ok();
    let before = masklm(&args).usage_error(&["not prepared yet", "masklm data prepare"]);
    assert!(!before.stderr.contains("damaged"), "{}", before.stderr);
    args[1] = "prepare".into();
    let out = masklm(&args).ok();
    assert!(out.stdout.contains("training store"), "{}", out.stdout);
    assert!(out.stdout.contains("(built)"), "{}", out.stdout);
    let again = masklm(&args).ok();
    assert!(again.stdout.contains("(current)"), "{}", again.stdout);
    args[1] = "verify".into();
    assert!(masklm(&args).ok().stdout.contains("every shard checks"));
    // The same file written another way is the same store, current.
    let dotted = [
        args.clone(),
        vec![
            "--set".into(),
            r#"data.train=["./corpora/tinystories/tinystories-validation-head.txt"]"#.into(),
        ],
    ]
    .concat();
    assert!(masklm(&dotted).ok().stdout.contains("every shard checks"));

    let shard = walk(&dir.path().join("cache"))
        .into_iter()
        .find(|p| p.ends_with("shard-00000.bin"))
        .expect("a shard");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    masklm(&args).usage_error(&["shard-00000.bin", "checksum"]);
    args[1] = "prepare".into();
    let out = masklm(&args).ok();
    assert!(out.stderr.contains("tokenized"), "rebuilt:\n{}", out.stderr);
    args[1] = "verify".into();
    masklm(&args).ok();
}

#[test]
fn an_unwritable_cache_folder_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the folder should be: creating the store fails, even for root.
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, "x").unwrap();
    let mut args: Vec<String> = ["data", "prepare", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    args.extend(common::isolated(dir.path()));
    args.extend(["--set".into(), format!("data.cache_dir={not_a_folder:?}")]);
    // Before any work (the tokenizer is not trained either).
    masklm(&args).usage_error(&["is a file, not a folder", "choose another data.cache_dir"]);
    assert!(!dir.path().join("tokenizer.json").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

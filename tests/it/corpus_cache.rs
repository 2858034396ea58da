//! The tokenized-corpus cache: a second run does not tokenize again; an edited corpus or another
//! tokenizer misses; a damaged cache file is rebuilt. JSON Lines and compressed corpora give the
//! ids of the same plain text, and a malformed one leaves no cache behind.

use crate::common;
use masklm::data::encoded::{Encoded, cache_path};
use masklm::tokenizer::BertTokenizer;
use std::path::Path;

fn tokenizer(vocab: usize) -> BertTokenizer {
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    masklm::data::train_tokenizer(&[corpus], vocab, true, "text").unwrap()
}

#[test]
fn cache_hits_misses_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let corpus = dir.path().join("c.txt");
    std::fs::write(
        &corpus,
        "once upon a time there was a girl\n\nshe liked to play\n",
    )
    .unwrap();
    let files = vec![corpus.clone()];
    let tok = tokenizer(300);

    let (first, hit) = Encoded::cached(&files, &tok, "text", &cache).unwrap();
    assert!(!hit, "an empty cache misses");
    assert_eq!(first, Encoded::from_files(&files, &tok, "text").unwrap());
    assert_eq!(first.line_ends.len(), 2, "two non-blank lines");
    let (second, hit) = Encoded::cached(&files, &tok, "text", &cache).unwrap();
    assert!(hit, "the second run reads the cache");
    assert_eq!(second, first);

    // A damaged cache file is detected and rebuilt.
    let path = cache_path(&files, &tok, "text", &cache).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (rebuilt, hit) = Encoded::cached(&files, &tok, "text", &cache).unwrap();
    assert!(!hit);
    assert_eq!(rebuilt, first);

    // An edited corpus or another tokenizer gets another cache file.
    std::fs::write(&corpus, "once upon a time there was a boy\n").unwrap();
    assert_ne!(cache_path(&files, &tok, "text", &cache).unwrap(), path);
    assert!(!Encoded::cached(&files, &tok, "text", &cache).unwrap().1);
    let other = tokenizer(400);
    assert_ne!(
        cache_path(&files, &other, "text", &cache).unwrap(),
        cache_path(&files, &tok, "text", &cache).unwrap()
    );
}

#[test]
fn jsonl_and_compressed_corpora_give_the_ids_of_the_plain_text() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = std::fs::read_to_string(
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt"),
    )
    .unwrap();
    let plain = dir.path().join("c.txt");
    std::fs::write(&plain, &text).unwrap();
    // The same documents as JSON Lines: a record per blank-line-separated document.
    let jsonl: String = text
        .split("\n\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            format!(
                "{}\n",
                serde_json::json!({ "text": d.trim_end_matches('\n') })
            )
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(jsonl.as_bytes()).unwrap();
    let variants = [
        ("c.jsonl", jsonl.as_bytes().to_vec()),
        ("c.jsonl.gz", gz.finish().unwrap()),
        ("c.txt.zst", zstd::encode_all(text.as_bytes(), 3).unwrap()),
    ];
    let tok = tokenizer(300);
    let want = Encoded::cached(&[plain], &tok, "text", &cache).unwrap().0;
    assert!(want.ids.len() > 10_000);
    for (name, bytes) in variants {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let (got, hit) = Encoded::cached(&[p], &tok, "text", &cache).unwrap();
        assert!(!hit, "{name}: a cache of its own");
        assert_eq!(got.ids, want.ids, "{name}");
    }

    // A malformed record: a usage error naming file and line, and no cache file written.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": oops}\n").unwrap();
    let before = std::fs::read_dir(&cache).unwrap().count();
    let e = Encoded::cached(std::slice::from_ref(&bad), &tok, "text", &cache).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("bad.jsonl line 2"), "{msg}");
    assert!(
        e.downcast_ref::<masklm::error::UsageError>().is_some(),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), before);
}

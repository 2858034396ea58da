//! The tokenized-corpus cache: a second run does not tokenize again; an edited corpus or another
//! tokenizer misses; a damaged cache file is rebuilt.

use crate::common;
use masklm::data::encoded::{Encoded, cache_path};
use masklm::tokenizer::BertTokenizer;
use std::path::Path;

fn tokenizer(vocab: usize) -> BertTokenizer {
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    masklm::data::train_tokenizer(&[corpus], vocab, true).unwrap()
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

    let (first, hit) = Encoded::cached(&files, &tok, &cache).unwrap();
    assert!(!hit, "an empty cache misses");
    assert_eq!(first, Encoded::from_files(&files, &tok).unwrap());
    assert_eq!(first.line_ends.len(), 2, "two non-blank lines");
    let (second, hit) = Encoded::cached(&files, &tok, &cache).unwrap();
    assert!(hit, "the second run reads the cache");
    assert_eq!(second, first);

    // A damaged cache file is detected and rebuilt.
    let path = cache_path(&files, &tok, &cache).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (rebuilt, hit) = Encoded::cached(&files, &tok, &cache).unwrap();
    assert!(!hit);
    assert_eq!(rebuilt, first);

    // An edited corpus or another tokenizer gets another cache file.
    std::fs::write(&corpus, "once upon a time there was a boy\n").unwrap();
    assert_ne!(cache_path(&files, &tok, &cache).unwrap(), path);
    assert!(!Encoded::cached(&files, &tok, &cache).unwrap().1);
    let other = tokenizer(400);
    assert_ne!(
        cache_path(&files, &other, &cache).unwrap(),
        cache_path(&files, &tok, &cache).unwrap()
    );
}

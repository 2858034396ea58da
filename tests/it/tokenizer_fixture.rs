//! The tokenizer masklm writes is the one HF `tokenizers` reads: parity against ids recorded
//! with HF (scripts/make_tokenizer_fixture.py), and a live check where Python has `tokenizers`.

use crate::common;
use masklm::data::train_tokenizer;
use masklm::tokenizer::{BertTokenizer, WordPieceTraining};
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "tests/fixtures/tokenizer";

fn fixture(name: &str) -> PathBuf {
    Path::new(common::ROOT).join(FIXTURE).join(name)
}

fn recorded() -> Vec<(String, Vec<u32>)> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("hf_encodings.json")).unwrap())
            .unwrap();
    v["encodings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ids = e["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (e["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn masklm_encodes_like_hf_tokenizers() {
    let tok = BertTokenizer::load(&fixture("tokenizer.json")).unwrap();
    let records = recorded();
    assert!(records.len() >= 5);
    for (text, hf_ids) in records {
        assert_eq!(
            tok.encode_with_specials(&text).unwrap(),
            hf_ids,
            "text {text:?}"
        );
    }
}

#[test]
fn training_still_writes_a_tokenizer_like_the_fixture() {
    // The fixture was made by `masklm tokenizer --corpus <this file> --vocab-size 500`, before
    // masklm's patch made the ids of `##` pieces independent of hash-map order; the vocabulary
    // may differ from it, everything else must not.
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    let tok = train_tokenizer(&[corpus], &WordPieceTraining::new(500, true), "text").unwrap();
    let mut ours: Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
    let mut fixture_json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(ours["model"]["vocab"].as_object().unwrap().len(), 500);
    for v in [&mut ours, &mut fixture_json] {
        v["model"]["vocab"] = Value::Null;
    }
    assert_eq!(
        ours, fixture_json,
        "normalizer, pre-tokenizer, post-processor, decoder, special tokens"
    );
}

#[test]
fn training_twice_on_one_corpus_gives_one_vocabulary() {
    // HF's trainer numbers the `##` pieces in hash-map order (and so may break ties between
    // equally frequent merges differently); masklm's patch numbers them in sorted order.
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    same_vocabulary_in_every_run(&corpus, 300);
}

/// The vocabulary (token → id) of four trainings on `corpus`, checked equal; returned once.
fn same_vocabulary_in_every_run(corpus: &Path, vocab_size: usize) -> Value {
    let vocab = || {
        let how = WordPieceTraining::new(vocab_size, true);
        let json = train_tokenizer(std::slice::from_ref(&corpus.to_path_buf()), &how, "text")
            .unwrap()
            .to_json()
            .unwrap();
        serde_json::from_str::<Value>(&json).unwrap()["model"]["vocab"].clone()
    };
    let first = vocab();
    for run in 1..4 {
        assert_eq!(vocab(), first, "training run {run}");
    }
    first
}

#[test]
fn an_alphabet_cut_at_its_limit_is_the_same_in_every_run() {
    // 1,100 distinct characters, each as frequent as the others: the trainer keeps 1,000 of
    // them, and which 100 go used to follow a hash map's order.
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("alphabet.txt");
    let line: Vec<String> = (0..1100u32)
        .map(|i| char::from_u32(0x4e00 + i).unwrap().to_string())
        .collect();
    std::fs::write(&corpus, format!("{0}\n{0}\n", line.join(" "))).unwrap();
    let first = same_vocabulary_in_every_run(&corpus, 1100);
    // The five special tokens and the 1,000 characters kept (each word is one character: no
    // merges).
    assert_eq!(first.as_object().unwrap().len(), 1005);
    let how = WordPieceTraining {
        limit_alphabet: 900,
        ..WordPieceTraining::new(1100, true)
    };
    let tok = train_tokenizer(std::slice::from_ref(&corpus), &how, "text").unwrap();
    assert_eq!(tok.vocab_size(), 905);
}

#[test]
fn live_hf_tokenizers_agrees_where_python_has_it() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tokenizers"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with the `tokenizers` package is not available");
        return;
    }
    let tok = BertTokenizer::load(&fixture("tokenizer.json")).unwrap();
    let texts: Vec<String> = recorded().into_iter().map(|(t, _)| t).collect();
    let script = format!(
        "import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file({:?})\nprint(json.dumps([t.encode(s).ids for s in json.load(sys.stdin)]))",
        fixture("tokenizer.json").to_str().unwrap()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hf: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    for (text, ids) in texts.iter().zip(hf) {
        assert_eq!(
            tok.encode_with_specials(text).unwrap(),
            ids,
            "text {text:?}"
        );
    }
}

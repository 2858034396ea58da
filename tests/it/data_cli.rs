//! `masklm tokenizer` and `masklm data preview`, end to end, including the bad-input table of
//! the foundation issue.

use crate::common;
use common::{isolated, masklm};
use serde_json::Value;
use std::path::Path;

fn preview_json(dir: &Path, config: &str, extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = [
        "data",
        "preview",
        "--config",
        config,
        "--json",
        "--batches",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(isolated(dir));
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = masklm(&args).ok();
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn grid(v: &Value, key: &str) -> Vec<Vec<i64>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn preview_of_the_default_config_obeys_every_masking_rule() {
    let dir = tempfile::tempdir().unwrap();
    let batches = preview_json(dir.path(), "configs/default.toml", &[]);
    assert_eq!(batches.len(), 3);
    let vocab = std::fs::read_to_string(dir.path().join("vocab.txt"))
        .unwrap()
        .lines()
        .count() as i64;
    let sp = &batches[0]["special_ids"];
    let special: Vec<i64> = ["pad", "unk", "cls", "sep", "mask"]
        .iter()
        .map(|k| sp[k].as_i64().unwrap())
        .collect();
    let (pad, mask) = (special[0], special[4]);
    let cfg = masklm::config::Config::load(
        Some(&Path::new(common::ROOT).join("configs/default.toml")),
        &[],
    )
    .unwrap();
    let (mut cand, mut sel, mut to_mask) = (0usize, 0usize, 0usize);
    for b in &batches {
        let (inp, att, lab, orig) = (
            grid(b, "input_ids"),
            grid(b, "attention_mask"),
            grid(b, "labels"),
            grid(b, "original_ids"),
        );
        assert_eq!(
            (inp.len(), inp[0].len()),
            (cfg.train.batch_size, cfg.data.seq_len),
            "batch_size × seq_len of the default config"
        );
        for r in 0..inp.len() {
            assert_eq!(orig[r][0], special[2], "rows start with [CLS]");
            for i in 0..inp[r].len() {
                assert_eq!(
                    att[r][i],
                    (orig[r][i] != pad) as i64,
                    "attention_mask is 0 exactly on padding"
                );
                if lab[r][i] == -100 {
                    assert_eq!(inp[r][i], orig[r][i], "unselected positions stay");
                    cand += !special.contains(&orig[r][i]) as usize;
                    continue;
                }
                cand += 1;
                sel += 1;
                assert!(
                    !special.contains(&orig[r][i]),
                    "a special or padding position was selected"
                );
                assert_eq!(lab[r][i], orig[r][i], "the label is the original id");
                if inp[r][i] == mask {
                    to_mask += 1;
                } else {
                    assert!(
                        !special.contains(&inp[r][i]) && inp[r][i] < vocab,
                        "random ids are non-special, below vocab_size"
                    );
                }
            }
        }
    }
    // 3 × 64 × 62 ≈ 12k candidates: loose bounds (±6σ) around the default's data.mask_prob 0.3;
    // the exact rates are tested on a million tokens in the masking unit tests.
    let rate = sel as f64 / cand as f64;
    assert!((rate - 0.3).abs() < 0.025, "selection rate {rate}");
    let share = to_mask as f64 / sel as f64;
    assert!((share - 0.8).abs() < 0.05, "[MASK] share {share}");

    // The same seed gives identical batches; another seed other ones.
    assert_eq!(
        preview_json(dir.path(), "configs/default.toml", &[]),
        batches
    );
    let other = preview_json(
        dir.path(),
        "configs/default.toml",
        &["--set", "train.seed=43"],
    );
    assert_ne!(other[0]["labels"], batches[0]["labels"]);
}

#[test]
fn preview_line_mode_pads_and_readable_view_marks_selections() {
    let dir = tempfile::tempdir().unwrap();
    let batches = preview_json(
        dir.path(),
        "configs/tiny.toml",
        &["--set", "data.packing=line", "--set", "data.seq_len=64"],
    );
    let att = grid(&batches[0], "attention_mask");
    assert!(att.iter().any(|r| r.contains(&0)), "short lines are padded");
    let mut args: Vec<String> = ["data", "preview", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(isolated(dir.path()));
    let text = masklm(&args).ok().stdout;
    assert!(text.contains("row 0") && text.contains("⟦"), "{text}");
}

#[test]
fn tokenizer_writes_tokenizer_json_and_vocab_txt() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok/tokenizer.json");
    let run = masklm(&[
        "tokenizer",
        "--corpus",
        "corpora/tinystories/tinystories-validation-head.txt",
        "--vocab-size",
        "500",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(run.stdout.contains("vocabulary of"), "{}", run.stdout);
    let vocab = std::fs::read_to_string(dir.path().join("tok/vocab.txt")).unwrap();
    let lines: Vec<&str> = vocab.lines().collect();
    assert_eq!(&lines[..5], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    assert!(
        lines.iter().any(|l| l.starts_with("##")),
        "WordPiece continuations"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["model"]["type"], "WordPiece");
    assert_eq!(json["normalizer"]["type"], "BertNormalizer");
    assert_eq!(json["normalizer"]["lowercase"], true);
    assert_eq!(json["pre_tokenizer"]["type"], "BertPreTokenizer");
    assert_eq!(json["post_processor"]["type"], "TemplateProcessing");
    assert_eq!(
        json["model"]["vocab"].as_object().unwrap().len(),
        lines.len()
    );
}

// ---- bad input: exit 2, a message naming the input, no panic ----

fn preview_with(dir: &Path, sets: &[String]) -> common::Run {
    let mut args: Vec<String> = ["data", "preview", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(isolated(dir));
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    masklm(&args)
}

#[test]
fn missing_corpus_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    preview_with(dir.path(), &["data.train=[\"no/such/file.txt\"]".into()])
        .usage_error(&["no/such/file.txt"]);
    masklm(&[
        "tokenizer",
        "--corpus",
        "no/such/dir",
        "--vocab-size",
        "100",
        "--out",
        dir.path().join("t.json").to_str().unwrap(),
    ])
    .usage_error(&["no/such/dir"]);
}

#[test]
fn empty_corpus_and_corpus_without_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let blank = dir.path().join("blank.txt");
    std::fs::write(&blank, "\n \n\t\n").unwrap();
    // No tokenizer yet: training one on nothing is refused.
    preview_with(dir.path(), &[format!("data.train=[{empty:?}]")]).usage_error(&["empty.txt"]);
    let tok = dir.path().join("tokenizer.json");
    masklm(&[
        "tokenizer",
        "--corpus",
        empty.to_str().unwrap(),
        "--vocab-size",
        "100",
        "--out",
        tok.to_str().unwrap(),
    ])
    .usage_error(&["empty.txt"]);
    // With a tokenizer: a corpus that yields no tokens is refused when it is encoded.
    masklm(&[
        "tokenizer",
        "--corpus",
        "corpora/tinystories/tinystories-validation-head.txt",
        "--vocab-size",
        "200",
        "--out",
        tok.to_str().unwrap(),
    ])
    .ok();
    preview_with(dir.path(), &[format!("data.train=[{blank:?}]")])
        .usage_error(&["blank.txt", "no tokens"]);
    preview_with(dir.path(), &[format!("data.train=[{empty:?}]")])
        .usage_error(&["empty.txt", "no tokens"]);
    let folder = dir.path().join("nothing");
    std::fs::create_dir(&folder).unwrap();
    preview_with(dir.path(), &[format!("data.train=[{folder:?}]")])
        .usage_error(&["contains no corpus files", ".jsonl"]);
    // A folder of WikiText's .raw files: named, with how to read them.
    for name in [
        "wiki.valid.raw",
        "wiki.train.raw",
        "wiki.test.raw",
        "notes.md",
        ".hidden",
    ] {
        std::fs::write(folder.join(name), "the cat sat\n").unwrap();
    }
    preview_with(dir.path(), &[format!("data.train=[{folder:?}]")]).usage_error(&[
        "it holds notes.md, wiki.test.raw, wiki.train.raw and 1 more (a file named on its own is \
         read as plain text",
    ]);
    // Too little text for one row, and for a validation split.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "once upon a time\n").unwrap();
    preview_with(dir.path(), &[format!("data.train=[{short:?}]")])
        .usage_error(&["short.txt", "data.seq_len"]);
}

#[test]
fn invalid_utf8_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"fine text here\ncaf\xe9 au lait\n").unwrap();
    preview_with(dir.path(), &[format!("data.train=[{bad:?}]")])
        .usage_error(&["latin1.txt", "byte offset 18"]);
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    preview_with(dir.path(), &["data.stride=3".into()]).usage_error(&["stride"]);
    preview_with(dir.path(), &["data.mask_prob=1.5".into()]).usage_error(&["data.mask_prob"]);
    preview_with(dir.path(), &["model.hidden_size=30".into()]).usage_error(&["not divisible"]);
    preview_with(dir.path(), &["data.seq_len=200".into()])
        .usage_error(&["max_position_embeddings"]);
    preview_with(dir.path(), &["data.seq_len=true".into()]).usage_error(&["data.seq_len"]);
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nsteps = \"many\"\n").unwrap();
    masklm(&["data", "preview", "--config", cfg.to_str().unwrap()]).usage_error(&["train.steps"]);
    masklm(&["data", "preview", "--config", "no/such.toml"]).usage_error(&["no/such.toml"]);
    masklm(&[
        "data",
        "preview",
        "--config",
        "configs/tiny.toml",
        "--batches",
        "0",
    ])
    .usage_error(&["--batches 0"]);
    masklm(&[
        "tokenizer",
        "--corpus",
        "corpora",
        "--vocab-size",
        "5",
        "--out",
        "x.json",
    ])
    .usage_error(&["--vocab-size 5"]);
}

#[test]
fn tokenizer_without_mask_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "tokenizer".into(),
        "--corpus".into(),
        "corpora/tinystories/tinystories-validation-head.txt".into(),
        "--vocab-size".into(),
        "200".into(),
        "--out".into(),
    ];
    let good = dir.path().join("good.json");
    args.push(good.to_str().unwrap().into());
    masklm(&args).ok();
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("[MASK]", "[MASQ]");
    let bad = dir.path().join("nomask.json");
    std::fs::write(&bad, text).unwrap();
    preview_with(dir.path(), &[format!("tokenizer.path={bad:?}")])
        .usage_error(&["nomask.json", "[MASK]"]);
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    preview_with(dir.path(), &[format!("tokenizer.path={garbage:?}")])
        .usage_error(&["garbage.json"]);
}

#[test]
fn a_corpus_of_repeated_lines_is_named_when_its_store_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::tiny_corpus();
    let (once, twice) = (dir.path().join("once.txt"), dir.path().join("twice.txt"));
    std::fs::write(&once, &text).unwrap();
    std::fs::write(&twice, text.repeat(2)).unwrap();
    let prepare = |corpus: &Path| {
        let mut args: Vec<String> = ["data", "prepare", "--config", "configs/tiny.toml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(isolated(dir.path()));
        args.extend(["--set".into(), format!("data.train=[{corpus:?}]")]);
        masklm(&args).ok().stderr
    };
    assert!(!prepare(&once).contains("repeat an earlier line"));
    let note = prepare(&twice);
    // Half the lines repeat the first half (give or take the sample and the text's own repeats).
    let pct: f64 = note
        .split("about ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no share in: {note}"));
    assert!((45.0..=55.0).contains(&pct), "{note}");
    assert!(note.contains("twice.txt"), "{note}");
}

#[test]
fn a_line_longer_than_a_piece_is_one_line_and_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("long.txt");
    // 200 KB on one line (read in 64 KiB pieces), then two short lines.
    let long = ["the cat sat on the mat"; 9000].join(" ");
    std::fs::write(
        &corpus,
        format!("{long}\nthe dog ran home\na bird flew by\n"),
    )
    .unwrap();
    let mut args: Vec<String> = ["data", "prepare", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(isolated(dir.path()));
    for set in [
        format!("data.train=[{corpus:?}]"),
        "data.packing=line".into(),
    ] {
        args.extend(["--set".into(), set]);
    }
    let out = masklm(&args).ok().stdout;
    assert!(out.contains(", 3 lines, 1 documents"), "{out}");
}

#[test]
fn a_vocabulary_larger_than_asked_is_noted() {
    // Every character of the corpus is kept before any merge, as HF's trainer does.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tokenizer.json");
    let run = masklm(&[
        "tokenizer",
        "--corpus",
        "corpora/tinystories/tinystories-validation-head.txt",
        "--vocab-size",
        "10",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(
        run.stderr.contains("more than the 10 asked"),
        "{}",
        run.stderr
    );
}

/// A tokenizer trained for a command that then refuses its corpus is not saved: the next run
/// would otherwise take it as the config's tokenizer, trained on the text refused.
#[test]
fn a_refused_corpus_leaves_no_new_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "once upon a time\n").unwrap();
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"fine text here\ncaf\xe9 au lait\n").unwrap();
    let good = "corpora/tinystories/tinystories-validation-head.txt";
    let runs: [(&[&str], String, &str); 3] = [
        (
            &["data", "preview"],
            format!("data.train=[{short:?}]"),
            "short.txt",
        ),
        (
            &["bench", "--steps", "1", "--warmup", "0"],
            format!("data.train=[{short:?}]"),
            "short.txt",
        ),
        // The training store is built, the held-out one is refused.
        (
            &["data", "prepare"],
            format!("data.valid=[{latin1:?}]"),
            "latin1.txt",
        ),
    ];
    for (command, data, named) in runs {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--config".into(), "configs/tiny.toml".into()]);
        args.extend(isolated(dir.path()));
        if !data.starts_with("data.train") {
            args.extend(["--set".into(), format!("data.train=[{good:?}]")]);
        }
        args.extend(["--set".into(), data]);
        masklm(&args).usage_error(&[named]);
        for f in ["tokenizer.json", "vocab.txt"] {
            assert!(!dir.path().join(f).exists(), "{command:?} left {f}");
        }
    }
}

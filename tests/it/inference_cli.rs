//! `masklm eval` and `masklm fill-mask` on a checkpoint trained here, and their clear errors.

use crate::common;
use common::masklm;
use masklm::fill_mask::Wanted;
use serde_json::Value;
use std::path::Path;

/// A few steps of the tiny config into `dir/run`; returns the run folder.
fn tiny_run(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let mut args: Vec<String> = [
        "train",
        "--config",
        "configs/tiny.toml",
        "--set",
        "train.steps=6",
        "--set",
        "train.warmup_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(common::isolated(dir));
    masklm(&args).ok();
    run
}

/// One JSON value per line of `out`.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn eval_and_fill_mask_on_a_trained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let r: Value = serde_json::from_str(
        &masklm(&["eval", "--checkpoint", run.to_str().unwrap(), "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    for k in ["loss", "perplexity", "accuracy", "top5_accuracy"] {
        assert!(r[k].as_f64().unwrap().is_finite(), "{k}");
    }
    assert!((r["perplexity"].as_f64().unwrap() - r["loss"].as_f64().unwrap().exp()).abs() < 1e-6);
    assert!(r["masked_tokens"].as_u64().unwrap() > 100);
    // The same checkpoint scores the same positions every time.
    let again: Value = serde_json::from_str(
        &masklm(&["eval", "--checkpoint", run.to_str().unwrap(), "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(r, again);

    let out = masklm(&[
        "fill-mask",
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
        "--top-k",
        "3",
        "the cat sat on the [MASK].",
        "a [MASK] and a [MASK].",
    ])
    .ok()
    .stdout;
    let lines = json_lines(&out);
    let one = lines[0].as_array().unwrap();
    assert_eq!(one.len(), 3, "one mask: a list of k candidates");
    let scores: Vec<f64> = one.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|&s| s > 0.0 && s < 1.0));
    for key in ["token", "token_str", "sequence"] {
        assert!(!one[0][key].is_null(), "{key}");
    }
    let two = lines[1].as_array().unwrap();
    assert_eq!(two.len(), 2, "two masks: a list of two lists");
    assert_eq!(two[0].as_array().unwrap().len(), 3);

    // --input with --json: one output line per input line, in order, whatever fails (a line
    // without [MASK], one that is not UTF-8, one over 1 MiB), each error naming its line.
    let input = dir.path().join("in.txt");
    let mut text = b"a [MASK].\r\n\nno mask here\nthe [MASK] sat.\n\xff [MASK]\n".to_vec();
    text.extend(b"the ".repeat(300_000));
    text.extend(b"[MASK]\nthe [MASK] ran.");
    std::fs::write(&input, text).unwrap();
    let run_json = masklm(&[
        "fill-mask",
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
        "--input",
        input.to_str().unwrap(),
    ]);
    let out = run_json
        .usage_error(&["3 of 6 inputs could not be filled"])
        .stdout;
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 7, "{out}");
    for i in [0, 3, 6] {
        assert!(lines[i].is_array(), "line {}: {out}", i + 1);
    }
    assert!(lines[1].is_null(), "a blank line: null");
    for (i, needle) in [(2, "no [MASK]"), (4, "not UTF-8"), (5, "longer than 1 MiB")] {
        let error = lines[i]["error"].as_str().unwrap();
        let at = format!("line {} of --input {}", i + 1, input.display());
        assert!(error.starts_with(&at) && error.contains(needle), "{error}");
    }
    // Candidates in HF's key order.
    let first = out.lines().next().unwrap();
    let keys: Vec<&str> = ["\"score\"", "\"token\"", "\"token_str\"", "\"sequence\""].into();
    let at: Vec<usize> = keys.iter().map(|k| out.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{first}");
}

#[test]
fn fill_mask_answers_each_input_line_as_it_is_read() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_masklm"))
        .args(["fill-mask", "--json", "--checkpoint"])
        .arg(&run)
        .args(["--input", "-"])
        .current_dir(common::ROOT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // The answer to the first line comes while the input is still open.
    writeln!(stdin, "the [MASK] sat.").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        tx.send(line).unwrap();
    });
    let answer = rx.recv_timeout(std::time::Duration::from_secs(120));
    drop(stdin);
    let answer = answer.expect("no answer before the input ended");
    assert!(answer.trim_start().starts_with('['), "{answer}");
    reader.join().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn eval_of_a_run_with_data_valid_never_reads_the_training_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::tiny_corpus();
    let (train, valid) = (dir.path().join("train.txt"), dir.path().join("valid.txt"));
    let cut = text.len() / 4;
    let cut = (cut..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap();
    std::fs::write(&valid, &text[..cut]).unwrap();
    std::fs::write(&train, &text[cut..]).unwrap();
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for set in [
        "train.steps=2".to_string(),
        "train.warmup_steps=0".to_string(),
        format!("data.train=[{train:?}]"),
        format!("data.valid=[{valid:?}]"),
    ] {
        args.extend(["--set".to_string(), set]);
    }
    args.extend(common::isolated(dir.path()));
    masklm(&args).ok();
    // The training corpus is gone: scoring data.valid must not need it.
    std::fs::remove_file(&train).unwrap();
    let run = dir.path().join("run");
    masklm(&["eval", "--checkpoint", run.to_str().unwrap(), "--json"]).ok();
}

#[test]
fn inference_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let ck = run.to_str().unwrap();
    masklm(&["fill-mask", "--checkpoint", "no/such/run", "a [MASK]"]).usage_error(&["no/such/run"]);
    masklm(&["eval", "--checkpoint", dir.path().to_str().unwrap()])
        .usage_error(&["holds no checkpoint"]);
    masklm(&["fill-mask", "--checkpoint", ck, "there is no mask here"])
        .usage_error(&["no [MASK]", "there is no mask here"]);
    masklm(&["fill-mask", "--checkpoint", ck, "--top-k", "0", "a [MASK]"])
        .usage_error(&["--top-k 0"]);
    masklm(&["fill-mask", "--checkpoint", ck, "", "  "])
        .usage_error(&["every TEXT argument is blank"]);
    let long = format!("{} [MASK]", "word ".repeat(100));
    masklm(&["fill-mask", "--checkpoint", ck, &long]).usage_error(&["max_position_embeddings 64"]);
    // Past the trained rows (24 tokens) but within max_position_embeddings: answered, with a note.
    let past = format!("{} [MASK]", "the ".repeat(30));
    let r = masklm(&["fill-mask", "--checkpoint", ck, &past]).ok();
    assert!(
        r.stderr.contains("TEXT argument 1 is 33 tokens long") && r.stderr.contains("seq_len 24"),
        "{}",
        r.stderr
    );
    // The same for eval's rows.
    let r = masklm(&["eval", "--checkpoint", ck, "--set", "data.seq_len=48"]).ok();
    assert!(
        r.stderr.contains(
            "data.seq_len 48 is longer than the rows this checkpoint was trained on (24)"
        ),
        "{}",
        r.stderr
    );
    // A tokenizer that does not match the checkpoint's weights (in a folder of its own: the run's
    // tokenizer has its vocab.txt beside it).
    let other = dir.path().join("other/tokenizer.json");
    masklm(&[
        "tokenizer",
        "--corpus",
        "corpora/tinystories/tinystories-validation-head.txt",
        "--vocab-size",
        "450",
        "--out",
        other.to_str().unwrap(),
    ])
    .ok();
    let latest = run.join("checkpoint-6");
    std::fs::copy(&other, latest.join("tokenizer.json")).unwrap();
    // Recorded as the checkpoint's own (else the checksum check reports the swap first).
    masklm::train::checkpoint::write_checksums(&latest).unwrap();
    masklm(&[
        "fill-mask",
        "--checkpoint",
        latest.to_str().unwrap(),
        "a [MASK]",
    ])
    .usage_error(&["does not fit", "vocab 450"]);
}

#[test]
fn a_loaded_checkpoint_needs_its_files_no_more() {
    // A run rotating its checkpoints may delete one right after eval or fill-mask loaded it:
    // the weights must be in memory by then (burn's try_load_file reads them lazily).
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let device = burn::prelude::Device::flex();
    let ck = masklm::train::checkpoint::load(&run, &device).unwrap();
    std::fs::remove_dir_all(&ck.dir).unwrap();
    let pad = masklm::fill_mask::Padding::NONE;
    let per_mask = masklm::fill_mask::fill_mask(
        &ck.model,
        &ck.tokenizer,
        "a [MASK].",
        Wanted::top(3),
        64,
        &device,
        pad,
    )
    .unwrap();
    assert_eq!(per_mask[0].len(), 3);
}

#[test]
fn fill_mask_sequences_leave_out_pad_as_hfs_pipeline_does() {
    // transformers' pipeline drops [PAD] ids before decoding a sequence; with several masks the
    // other special tokens stay.
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let text = "the [PAD] dog [MASK] ran [MASK] .";
    let args = [
        "fill-mask",
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
        "--top-k",
        "300",
    ];
    let out = masklm(&[&args[..], &[text]].concat()).ok();
    let per_mask: Vec<Vec<Value>> = serde_json::from_str(out.stdout.trim()).unwrap();
    let sequences: Vec<&str> = per_mask
        .iter()
        .flatten()
        .map(|c| c["sequence"].as_str().unwrap())
        .collect();
    assert!(sequences.len() > 100);
    assert!(
        sequences.iter().all(|s| !s.contains("[PAD]")),
        "{sequences:?}"
    );
    assert!(sequences.iter().all(|s| s.starts_with("[CLS] the dog")));
}

#[test]
fn eval_says_when_it_scores_text_the_checkpoint_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let eval = |set: &str| {
        let args = [
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--json",
            "--set",
            set,
        ];
        masklm(&args).ok().stderr
    };
    let trained = "scores text this checkpoint trained on: its run held out only the first 5%";
    let err = eval("data.validation_split_percentage=50");
    assert!(
        err.contains(&format!(
            "note: scoring the first 50% of data.train's rows {trained}"
        )),
        "{err}"
    );
    let err = eval("data.validation_split_percentage=5");
    assert!(!err.contains("trained on"), "{err}");
    // --corpus scores its own text, whatever the split.
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    let args = [
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
    ];
    let set = ["--set", "data.validation_split_percentage=50"];
    let err = masklm(&[&args[..], &set].concat()).ok().stderr;
    assert!(!err.contains("checkpoint trained on"), "{err}");
    // The run's data.train file as data.valid.
    let err = eval("data.valid=[\"corpora/tinystories/tinystories-validation-head.txt\"]");
    assert!(err.contains("is also in data.train"), "{err}");
}

#[test]
fn max_eval_samples_scores_the_first_rows_in_training_and_in_eval() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .map(String::from)
        .into();
    for s in [
        "train.steps=6",
        "train.warmup_steps=2",
        "data.max_eval_samples=3",
    ] {
        args.extend(["--set".into(), s.into()]);
    }
    args.extend(common::isolated(dir.path()));
    let trained = masklm(&args).ok();
    assert!(
        trained
            .stderr
            .contains("(evaluation scores the first 3: data.max_eval_samples)"),
        "{}",
        trained.stderr
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last_eval = json_lines(&metrics)
        .into_iter()
        .rfind(|r| r["eval_loss"].is_number())
        .unwrap();
    let eval = |cap: Option<&str>| {
        let mut args = vec!["eval", "--checkpoint", run.to_str().unwrap(), "--json"];
        if let Some(cap) = cap {
            args.extend(["--set", cap]);
        }
        let out = masklm(&args).ok();
        (
            serde_json::from_str::<Value>(&out.stdout).unwrap(),
            out.stderr,
        )
    };
    // The checkpoint's config keeps the cap: eval scores what the run's last evaluation did.
    let (capped, note) = eval(None);
    assert!(note.contains("scoring the first 3 of"), "{note}");
    assert_eq!(capped["masked_tokens"], last_eval["eval_masked_tokens"]);
    let loss = |r: &Value, k: &str| r[k].as_f64().unwrap();
    assert!((loss(&capped, "loss") - loss(&last_eval, "eval_loss")).abs() < 1e-5);
    // 0, or more rows than there are, scores them all.
    let (all, note) = eval(Some("data.max_eval_samples=0"));
    assert!(!note.contains("scoring the first"), "{note}");
    assert_eq!(all, eval(Some("data.max_eval_samples=1000000")).0);
    let tokens = |r: &Value| r["masked_tokens"].as_u64().unwrap();
    assert!(
        0 < tokens(&capped) && tokens(&capped) < tokens(&all),
        "{capped} {all}"
    );
    // Text named with --corpus is scored whole: the run's cap was for its held-out text; --set
    // caps it.
    let corpus = |cap: Option<&str>| {
        let text = "corpora/tinystories/tinystories-validation-head.txt";
        let mut args = vec!["eval", "--checkpoint", run.to_str().unwrap(), "--json"];
        args.extend(["--corpus", text]);
        if let Some(cap) = cap {
            args.extend(["--set", cap]);
        }
        let out = masklm(&args).ok();
        let r = serde_json::from_str::<Value>(&out.stdout).unwrap();
        (tokens(&r), out.stderr)
    };
    let (whole, note) = corpus(None);
    assert!(!note.contains("scoring the first"), "{note}");
    let (cut, note) = corpus(Some("data.max_eval_samples=3"));
    assert!(note.contains("scoring the first 3 of"), "{note}");
    assert!(0 < cut && cut < whole, "{cut} {whole}");
}

#[test]
fn fill_mask_padded_as_on_a_gpu_answers_what_it_answers_unpadded() {
    // On a GPU, fill-mask pads a text's row (attention 0) and its masks (at [CLS], dropped) so
    // that texts of many lengths share compiled kernels; here the CPU computes both ways.
    use masklm::fill_mask::{Padding, fill_mask};
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let device = burn::prelude::Device::flex();
    let ck = masklm::train::checkpoint::load(&run, &device).unwrap();
    let max_len = ck.config.model.max_position_embeddings;
    let gpu_like = Padding { row: 32, masks: 64 };
    // A short text, one mask; two masks; a text past 32 tokens, padded to
    // max_position_embeddings (64).
    let long = (1..)
        .map(|n| format!("{} [MASK] end .", "the dog ran . ".repeat(n)))
        .find(|t| ck.tokenizer.encode_with_specials(t).unwrap().len() > max_len - 32 + 1)
        .unwrap();
    for text in [
        "a [MASK] .",
        "[MASK] dog ran to the [MASK] .",
        long.as_str(),
    ] {
        let len = ck.tokenizer.encode_with_specials(text).unwrap().len();
        assert!(len <= max_len, "{len} tokens");
        let answer = |p| {
            fill_mask(
                &ck.model,
                &ck.tokenizer,
                text,
                Wanted::top(4),
                max_len,
                &device,
                p,
            )
        };
        let (plain, padded) = (answer(Padding::NONE).unwrap(), answer(gpu_like).unwrap());
        assert_eq!(plain.len(), padded.len(), "{text}");
        for (a, b) in plain.iter().zip(&padded) {
            for (x, y) in a.iter().zip(b) {
                assert!((x.score - y.score).abs() < 1e-5, "{text}: {x:?} vs {y:?}");
                // Two candidates within rounding of each other may swap ranks.
                let same = |c: &&masklm::fill_mask::Candidate| {
                    c.token == x.token
                        && c.sequence == x.sequence
                        && (c.score - x.score).abs() < 1e-5
                };
                assert!(b.iter().any(|c| same(&c)), "{text}: {x:?} not in {b:?}");
            }
        }
    }
    assert_eq!(gpu_like.row_len(7, 64), 32);
    assert_eq!(gpu_like.row_len(50, 60), 60);
    assert_eq!(gpu_like.row_len(64, 64), 64);
    assert_eq!(Padding::NONE.row_len(7, 64), 7);
}

#[test]
fn evaluation_padded_as_on_a_gpu_scores_what_it_scores_unpadded() {
    // On a GPU, evaluate pads each batch's selected positions to one shape (weight 0 on the
    // padding) and a short last batch to full rows; here the CPU computes both ways.
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let device = burn::prelude::Device::flex();
    let ck = masklm::train::checkpoint::load(&run, &device).unwrap();
    let corpus =
        Path::new(common::ROOT).join("corpora/tinystories/tinystories-validation-head.txt");
    let rows = masklm::data::rows_from(&[corpus], &ck.config, &ck.tokenizer, "test").unwrap();
    // A short last batch, padded to full rows too, and more batches than wait on the device
    // before a read.
    let batch = (2..7).find(|b| !rows.len().is_multiple_of(*b)).unwrap();
    assert!(
        rows.len() / batch > masklm::eval::READ_EVERY,
        "{} rows",
        rows.len()
    );
    let table = std::sync::Arc::new(ck.tokenizer.token_table());
    let score = |multiple: usize| {
        masklm::eval::evaluate_padded(
            &ck.model,
            &rows,
            table.clone(),
            ck.tokenizer.specials(),
            batch,
            &device,
            multiple,
        )
        .unwrap()
    };
    let plain = score(1);
    assert!(
        plain.masked_tokens > 200 && plain.loss.is_finite(),
        "{plain}"
    );
    // Accuracy and top-5 against the label's place in each position's sorted logits, counted
    // here on the host (eval counts them on the device without sorting).
    let (mut n, mut top1, mut top5) = (0usize, 0usize, 0usize);
    let batches = masklm::data::batches::eval_batches(
        &rows,
        table.clone(),
        ck.tokenizer.specials(),
        masklm::eval::EVAL_SEED,
        batch,
    );
    for b in batches {
        let b = b.unwrap();
        if b.selected == 0 {
            continue;
        }
        let tb = masklm::data::batcher::TensorBatch::padded(&b, &device, 1);
        let labels: Vec<i64> = tb
            .labels
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let logits = ck
            .model
            .forward_selected(tb.input_ids, tb.attention_mask, tb.positions);
        let vocab = logits.dims()[1];
        let logits: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
        for (row, &label) in logits.chunks(vocab).zip(&labels) {
            let mut order: Vec<usize> = (0..vocab).collect();
            // Descending, the lower id first among equals (argmax's first maximum).
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let place = order.iter().position(|&i| i as i64 == label).unwrap();
            (n, top1, top5) = (
                n + 1,
                top1 + (place == 0) as usize,
                top5 + (place < 5) as usize,
            );
        }
    }
    assert_eq!(n, plain.masked_tokens);
    assert_eq!(plain.accuracy, top1 as f64 / n as f64, "{plain}");
    assert_eq!(plain.top5_accuracy, top5 as f64 / n as f64, "{plain}");
    for multiple in [7, 64] {
        let padded = score(multiple);
        assert!(
            (padded.loss - plain.loss).abs() < 1e-5 * plain.loss,
            "multiple {multiple}: {padded} vs {plain}"
        );
        let counted = |r: &masklm::eval::EvalReport| (r.masked_tokens, r.baseline_accuracy);
        assert_eq!(counted(&padded), counted(&plain), "multiple {multiple}");
        // The logits of other row counts may round differently on another CPU: a near tie may
        // turn at a position or two of thousands.
        let one = 1.0 / plain.masked_tokens as f64;
        for (a, b) in [
            (padded.accuracy, plain.accuracy),
            (padded.top5_accuracy, plain.top5_accuracy),
        ] {
            assert!(
                (a - b).abs() <= 2.0 * one,
                "multiple {multiple}: {padded} vs {plain}"
            );
        }
    }
}

/// A reader that goes away (`masklm fill-mask … | head -1`) ends the command quietly with status
/// 0, as it ends any Unix tool; a full disk is an error that names standard output. No panic.
#[test]
fn a_closed_or_full_standard_output_is_no_panic() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let input = dir.path().join("many.txt");
    std::fs::write(&input, "the [MASK] ran home\n".repeat(3000)).unwrap();
    let masklm_cmd = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_masklm"));
        c.current_dir(common::ROOT).env("BURN_DEVICE", "flex");
        c
    };
    // Far more output than a pipe holds (64 KiB), so the writer meets the closed end.
    let mut child = masklm_cmd()
        .args(["fill-mask", "--checkpoint"])
        .arg(&run)
        .arg("--input")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("[MASK]"), "{first}");
    drop(out);
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let Ok(full) = std::fs::File::create("/dev/full") else {
        eprintln!("no /dev/full here: the full-disk half is not checked");
        return;
    };
    let done = masklm_cmd()
        .args(["eval", "--checkpoint"])
        .arg(&run)
        .arg("--json")
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

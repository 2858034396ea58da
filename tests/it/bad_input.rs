//! The bad-input table: for every subcommand, each row is a mistake a user makes. Each must exit
//! with 2, print a message that names the offending input (and, where the row says, the fix),
//! never panic, and leave no partial output behind.

use crate::common;
use common::masklm;
use std::path::{Path, PathBuf};

/// A row: what the user typed, what the message must contain, what must not exist afterwards.
struct Row {
    what: &'static str,
    args: Vec<String>,
    needles: Vec<String>,
    absent: Vec<PathBuf>,
}

fn row(what: &'static str, args: &[&str], needles: &[&str], absent: &[&Path]) -> Row {
    Row {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        needles: needles.iter().map(|s| s.to_string()).collect(),
        absent: absent.iter().map(|p| p.to_path_buf()).collect(),
    }
}

fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for r in rows {
        let run = masklm(&r.args);
        let mut problems = Vec::new();
        if run.code != 2 {
            problems.push(format!("exit {} (want 2)", run.code));
        }
        if run.stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        for n in &r.needles {
            if !run.stderr.contains(n.as_str()) {
                problems.push(format!("message lacks {n:?}"));
            }
        }
        for p in &r.absent {
            if p.exists() {
                problems.push(format!("left {}", p.display()));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  $ masklm {}\n  {}",
                r.what,
                problems.join("; "),
                r.args.join(" "),
                run.stderr.trim().replace('\n', "\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Bad files, made once per test: `(dir, missing, folder, empty, latin1, garbage)`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("folder.txt")).unwrap();
        std::fs::write(p.join("empty.txt"), "").unwrap();
        std::fs::write(p.join("latin1.txt"), b"caf\xe9 au lait\n").unwrap();
        std::fs::write(p.join("garbage.json"), "{ this is not json").unwrap();
        std::fs::write(p.join("plain.txt"), "a line of text\n").unwrap();
        std::fs::write(
            p.join("bad.jsonl"),
            "{\"text\": \"fine\"}\n{\"text\": oops\n",
        )
        .unwrap();
        std::fs::write(p.join("nofield.jsonl"), "{\"body\": \"text\"}\n").unwrap();
        std::fs::write(p.join("damaged.txt.gz"), "not gzip").unwrap();
        Self { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

#[test]
fn tokenizer_bad_inputs() {
    let f = Files::new();
    sparse_200_mb(&f.path("huge.txt"));
    let out = f.path("tok/tokenizer.json");
    let o = out.display().to_string();
    let tok = |corpus: &str| -> Vec<String> {
        [
            "tokenizer",
            "--corpus",
            corpus,
            "--vocab-size",
            "100",
            "--out",
            &o,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let rows = vec![
        (
            "missing corpus",
            tok(&f.s("missing.txt")),
            vec!["missing.txt".to_string()],
        ),
        (
            "empty corpus",
            tok(&f.s("empty.txt")),
            vec!["empty.txt".into()],
        ),
        (
            "a 200 MB line without a newline (NUL bytes: no words)",
            tok(&f.s("huge.txt")),
            vec!["huge.txt".into(), "no words".into()],
        ),
        (
            "invalid UTF-8",
            tok(&f.s("latin1.txt")),
            vec!["latin1.txt".into(), "byte offset 3".into()],
        ),
        (
            "malformed JSON Lines record",
            tok(&f.s("bad.jsonl")),
            vec!["bad.jsonl line 2".into(), "not valid JSON".into()],
        ),
        (
            "JSON Lines record without the text field",
            tok(&f.s("nofield.jsonl")),
            vec![
                "nofield.jsonl line 1".into(),
                "\"text\"".into(),
                "data.text_field".into(),
            ],
        ),
        (
            "damaged gzip file",
            tok(&f.s("damaged.txt.gz")),
            vec!["damaged.txt.gz".into()],
        ),
        (
            "--out is a folder",
            [
                "tokenizer",
                "--corpus",
                "corpora/tinystories/tinystories-validation-head.txt",
                "--vocab-size",
                "100",
                "--out",
                &f.s("folder.txt"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            vec!["folder.txt".into()],
        ),
        (
            "--limit-alphabet 0",
            {
                let mut a = tok("corpora/tinystories/tinystories-validation-head.txt");
                a.extend(["--limit-alphabet".into(), "0".into()]);
                a
            },
            vec!["--limit-alphabet 0".into()],
        ),
        (
            "a dangling link where the tokenizer's folder goes",
            {
                std::os::unix::fs::symlink(f.path("nowhere"), f.path("dangling")).unwrap();
                let mut a = tok("corpora/tinystories/tinystories-validation-head.txt");
                let n = a.len();
                a[n - 1] = f.s("dangling/tokenizer.json");
                a
            },
            vec!["dangling".into(), "does not exist".into()],
        ),
    ];
    check(
        rows.into_iter()
            .map(|(what, args, needles)| Row {
                what,
                args,
                needles,
                absent: vec![out.clone()],
            })
            .collect(),
    );
}

#[test]
fn train_and_bench_bad_inputs() {
    let f = Files::new();
    let run = f.path("run");
    let r = run.display().to_string();
    std::fs::write(f.path("latin1.toml"), b"[train]\nsteps = 3 # \xe9\n").unwrap();
    std::fs::write(f.path("types.toml"), "[train]\nsteps = \"many\"\n").unwrap();
    // A 200 MB config of one line (sparse).
    sparse_200_mb(&f.path("huge.toml"));
    sparse_200_mb(&f.path("huge.json"));
    sparse_200_mb(&f.path("huge.txt"));
    let out_dir = format!("train.out_dir={r:?}");
    let with = |cmd: &'static str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [cmd, "--config", "configs/tiny.toml", "--set", &out_dir]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut rows = Vec::new();
    for cmd in ["train", "bench"] {
        rows.extend([
            row(
                "missing config",
                &[cmd, "--config", &f.s("missing.toml")],
                &["missing.toml"],
                &[&run],
            ),
            row(
                "config is a folder",
                &[cmd, "--config", &f.s("folder.txt")],
                &["folder.txt", "give a TOML file"],
                &[&run],
            ),
            row(
                "config is not UTF-8",
                &[cmd, "--config", &f.s("latin1.toml")],
                &["latin1.toml", "UTF-8"],
                &[&run],
            ),
            row(
                "a 200 MB config of one line",
                &[cmd, "--config", &f.s("huge.toml")],
                &["huge.toml", "at most 1 MiB"],
                &[&run],
            ),
            row(
                "wrong type in the config file",
                &[cmd, "--config", &f.s("types.toml")],
                &["train.steps"],
                &[&run],
            ),
            Row {
                what: "wrong type in --set",
                args: with(cmd, &["--set", "train.steps=\"many\""]),
                needles: vec!["train.steps".into()],
                absent: vec![run.clone()],
            },
            Row {
                what: "out-of-range value",
                args: with(cmd, &["--set", "model.hidden_dropout_prob=1.5"]),
                needles: vec!["model.hidden_dropout_prob".into(), "[0, 1)".into()],
                absent: vec![run.clone()],
            },
            Row {
                what: "unknown key",
                args: with(cmd, &["--set", "train.stpes=3"]),
                needles: vec!["stpes".into()],
                absent: vec![run.clone()],
            },
            Row {
                what: "a corpus of one 200 MB line (NUL bytes: no words)",
                args: with(
                    cmd,
                    &[
                        "--set",
                        &format!("data.train=[{:?}]", f.s("huge.txt")),
                        "--set",
                        &format!("tokenizer.path={:?}", f.s("tok/tokenizer.json")),
                    ],
                ),
                needles: vec!["huge.txt".into(), "no words".into()],
                absent: vec![run.clone(), f.path("tok/tokenizer.json")],
            },
            Row {
                what: "corpus not UTF-8",
                args: with(
                    cmd,
                    &["--set", &format!("data.train=[{:?}]", f.s("latin1.txt"))],
                ),
                needles: vec!["latin1.txt".into(), "byte offset".into()],
                absent: vec![run.clone()],
            },
            Row {
                what: "a 200 MB tokenizer.json of one line",
                args: with(
                    cmd,
                    &["--set", &format!("tokenizer.path={:?}", f.s("huge.json"))],
                ),
                needles: vec!["huge.json".into(), "64 MiB".into()],
                absent: vec![run.clone()],
            },
            Row {
                what: "tokenizer.json is garbage",
                args: with(
                    cmd,
                    &[
                        "--set",
                        &format!("tokenizer.path={:?}", f.s("garbage.json")),
                    ],
                ),
                needles: vec!["garbage.json".into()],
                absent: vec![run.clone()],
            },
        ]);
    }
    check(rows);
}

/// A 200 MB file of one line without a newline; sparse, so it costs no disk and no time.
fn sparse_200_mb(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
}

/// A tiny trained run (2 steps) in `dir/run`, with its tokenizer in `dir`.
fn tiny_run(dir: &Path) -> PathBuf {
    let mut args: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(common::isolated(dir));
    for s in [
        "train.steps=2",
        "train.warmup_steps=0",
        "train.eval_every=0",
    ] {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    masklm(&args).ok();
    dir.join("run")
}

#[test]
fn inference_export_import_and_plot_bad_inputs() {
    let f = Files::new();
    let run = tiny_run(f.dir.path());
    let ck = run.display().to_string();
    let hf = f.path("hf");
    std::fs::write(f.path("nomask.txt"), "no mask on this line\n").unwrap();
    sparse_200_mb(&f.path("huge.txt"));
    // HF folders: one whose config.json is 200 MB; one that is the fixture but for a 200 MB
    // tokenizer.json; one that is the fixture but for a 200 MB vocab.txt and no tokenizer.json.
    let fixture = Path::new(common::ROOT).join("tests/fixtures/hf-tiny");
    for (dir, huge, copied) in [
        ("hugeconfig", "config.json", &[][..]),
        (
            "hugetok",
            "tokenizer.json",
            &["config.json", "model.safetensors"][..],
        ),
        (
            "hugevocab",
            "vocab.txt",
            &["config.json", "model.safetensors"][..],
        ),
    ] {
        std::fs::create_dir(f.path(dir)).unwrap();
        for c in copied {
            std::fs::copy(fixture.join(c), f.path(dir).join(c)).unwrap();
        }
        sparse_200_mb(&f.path(dir).join(huge));
    }
    std::fs::create_dir(f.path("hugerun")).unwrap();
    sparse_200_mb(&f.path("hugerun/metrics.jsonl"));
    for (dir, file, body) in [
        ("badhf", "config.json", b"{".as_slice()),
        ("badrun", "metrics.jsonl", b"not json\n".as_slice()),
        (
            "latin1run",
            "metrics.jsonl",
            b"{\"step\": 1, \"loss\": \xe9}\n".as_slice(),
        ),
    ] {
        std::fs::create_dir(f.path(dir)).unwrap();
        std::fs::write(f.path(dir).join(file), body).unwrap();
    }
    // `import --hf DIR` into a fresh folder, which must not be left behind.
    let imported = f.path("imported");
    let import_row = |what, dir: &str, needles: &[&str]| {
        row(
            what,
            &["import", "--hf", &f.s(dir), "--out", &f.s("imported")],
            needles,
            &[&imported],
        )
    };
    let rows = vec![
        row(
            "eval: missing checkpoint",
            &["eval", "--checkpoint", &f.s("missing")],
            &["missing", "train.out_dir"],
            &[],
        ),
        row(
            "eval: a file where a checkpoint folder is expected",
            &["eval", "--checkpoint", &f.s("plain.txt")],
            &["plain.txt"],
            &[],
        ),
        row(
            "eval: corpus not UTF-8",
            &["eval", "--checkpoint", &ck, "--corpus", &f.s("latin1.txt")],
            &["latin1.txt", "byte offset"],
            &[],
        ),
        row(
            "eval: a corpus of one 200 MB line (NUL bytes: no tokens)",
            &["eval", "--checkpoint", &ck, "--corpus", &f.s("huge.txt")],
            &["huge.txt", "no tokens"],
            &[],
        ),
        row(
            "eval: empty corpus",
            &["eval", "--checkpoint", &ck, "--corpus", &f.s("empty.txt")],
            &["empty.txt"],
            &[],
        ),
        row(
            "eval: missing corpus",
            &["eval", "--checkpoint", &ck, "--corpus", &f.s("missing.txt")],
            &["missing.txt"],
            &[],
        ),
        row(
            "eval: --set data.valid to a missing file, said as the --set's",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--set",
                &format!("data.valid=[{:?}]", f.s("missing.txt")),
            ],
            &["missing.txt", "as --set data.valid="],
            &[],
        ),
        row(
            "eval: data.cache_dir under a file",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--set",
                &format!("data.cache_dir={:?}", f.s("plain.txt/cache")),
            ],
            &["data.cache_dir", "plain.txt is a file"],
            &[],
        ),
        row(
            "eval: data.max_eval_samples keeps a row with nothing to score",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--set",
                "data.max_eval_samples=1",
                "--set",
                "data.seq_len=3",
            ],
            &["no token to score", "raise data.max_eval_samples"],
            &[],
        ),
        row(
            "fill-mask: missing input file",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("missing.txt"),
            ],
            &["missing.txt"],
            &[],
        ),
        row(
            "fill-mask: input is a folder",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("folder.txt"),
            ],
            &["folder.txt"],
            &[],
        ),
        row(
            "fill-mask: input not UTF-8",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("latin1.txt"),
            ],
            &["latin1.txt"],
            &[],
        ),
        row(
            "fill-mask: a 200 MB line without a newline",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("huge.txt"),
            ],
            &["line 1", "huge.txt", "longer than 1 MiB"],
            &[],
        ),
        row(
            "fill-mask: a line without [MASK]",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("nomask.txt"),
            ],
            &["no [MASK]", "no mask on this line"],
            &[],
        ),
        row(
            "export: missing checkpoint",
            &[
                "export",
                "--checkpoint",
                &f.s("missing"),
                "--out",
                &f.s("hf"),
            ],
            &["missing"],
            &[&hf],
        ),
        row(
            "export: --out is a file",
            &["export", "--checkpoint", &ck, "--out", &f.s("plain.txt")],
            &["plain.txt", "folder"],
            &[],
        ),
        import_row(
            "import: missing folder",
            "missing",
            &["missing", "save_pretrained"],
        ),
        import_row(
            "import: a folder without config.json",
            "folder.txt",
            &["config.json"],
        ),
        row(
            "fill-mask: empty input file",
            &[
                "fill-mask",
                "--checkpoint",
                &ck,
                "--input",
                &f.s("empty.txt"),
            ],
            &["empty.txt", "[MASK]"],
            &[],
        ),
        row(
            "export: a file where a checkpoint folder is expected",
            &[
                "export",
                "--checkpoint",
                &f.s("plain.txt"),
                "--out",
                &f.s("hf"),
            ],
            &["plain.txt", "is a file", "checkpoint-N"],
            &[&hf],
        ),
        import_row(
            "import: config.json is not JSON",
            "badhf",
            &["config.json", "not valid JSON", "save_pretrained"],
        ),
        row(
            "plot: metrics.jsonl is not a metrics log",
            &["plot", &f.s("badrun")],
            &["metrics.jsonl:1", "not a valid metrics row"],
            &[&f.path("badrun/loss.png")],
        ),
        row(
            "plot: metrics.jsonl is not UTF-8",
            &["plot", &f.s("latin1run")],
            &["metrics.jsonl:1"],
            &[&f.path("latin1run/loss.png")],
        ),
        import_row(
            "import: a 200 MB config.json",
            "hugeconfig",
            &["config.json", "1 MiB"],
        ),
        import_row(
            "import: a 200 MB tokenizer.json",
            "hugetok",
            &["tokenizer.json", "64 MiB"],
        ),
        import_row(
            "import: a 200 MB vocab.txt",
            "hugevocab",
            &["vocab.txt", "64 MiB"],
        ),
        row(
            "plot: a 200 MB metrics.jsonl of one line",
            &["plot", &f.s("hugerun")],
            &["metrics.jsonl:1", "longer than 64 KiB"],
            &[&f.path("hugerun/loss.png")],
        ),
        row(
            "plot: missing run folder",
            &["plot", &f.s("missing")],
            &["missing"],
            &[],
        ),
        row(
            "plot: a folder without metrics.jsonl",
            &["plot", &f.s("folder.txt")],
            &["metrics.jsonl"],
            &[&f.path("folder.txt/loss.png")],
        ),
    ];
    check(rows);
}

/// `train --config configs/tiny.toml` with `extra` `--set`s, writing into `f`'s folder.
fn tiny_train(f: &Files, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--config", "configs/tiny.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in [
        format!("tokenizer.path={:?}", f.s("newtok/tokenizer.json")),
        format!("data.cache_dir={:?}", f.s("cache")),
        format!("train.out_dir={:?}", f.s("newrun")),
        "train.steps=2".into(),
        "train.warmup_steps=0".into(),
        "train.eval_every=0".into(),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    {
        a.extend(["--set".to_string(), s]);
    }
    a
}

/// `masklm data COMMAND` on the tiny config with its tokenizer at `tok` and stores in `cache`.
fn data_command(command: &str, tok: &Path, cache: &str) -> Vec<String> {
    let (tok, cache) = (
        format!("tokenizer.path={tok:?}"),
        format!("data.cache_dir={cache:?}"),
    );
    [
        "data",
        command,
        "--config",
        "configs/tiny.toml",
        "--set",
        &tok,
        "--set",
        &cache,
    ]
    .map(String::from)
    .into()
}

/// Outputs that cannot be made, outputs that would overwrite inputs, and runs that fail before
/// they start: refused up front, and none leaves a file for the next run to pick up.
#[test]
fn outputs_in_the_way_and_runs_that_fail_before_they_start() {
    let f = Files::new();
    let run = tiny_run(f.dir.path());
    let ck = run.display().to_string();
    std::fs::write(f.path("short.txt"), "one short line of eight words here\n").unwrap();
    std::fs::write(f.path("corpus.txt"), "the cat sat on the mat\n".repeat(50)).unwrap();
    std::fs::write(
        f.path("body.jsonl"),
        "{\"body\": \"the cat sat on the mat\"}\n".repeat(200),
    )
    .unwrap();
    std::fs::create_dir_all(f.path("corpdir")).unwrap();
    std::fs::copy(f.path("corpus.txt"), f.path("corpdir/corpus.txt")).unwrap();
    std::fs::create_dir_all(f.path("blocked/metrics.jsonl")).unwrap();
    let under_file = f.s("plain.txt/sub");
    let (newtok, newvocab) = (f.path("newtok/tokenizer.json"), f.path("newtok/vocab.txt"));
    let newrun = f.path("newrun");
    let fixture = Path::new(common::ROOT).join("tests/fixtures/hf-tiny");
    // `masklm tokenizer` on the small corpus, writing `out`.
    let tokenize = |out: &str| -> Vec<String> {
        let corpus = f.s("corpus.txt");
        [
            "tokenizer",
            "--corpus",
            &corpus,
            "--vocab-size",
            "50",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let other_tok = f.s("other/tokenizer.json");
    let small = masklm(&tokenize(&other_tok)).ok();
    assert!(
        small.stderr.contains("fewer than the 50 asked")
            && small.stderr.contains("a lower --min-frequency"),
        "{}",
        small.stderr
    );
    // At a min frequency of 1 a lower one cannot help; the note says what stopped it.
    let mut at_one = tokenize(&f.s("other1/tokenizer.json"));
    at_one.extend(["--min-frequency".to_string(), "1".to_string()]);
    let at_one = masklm(&at_one).ok();
    assert!(
        at_one
            .stderr
            .contains("every word of the corpus is one token")
            && !at_one.stderr.contains("--min-frequency"),
        "{}",
        at_one.stderr
    );
    let resume_run = |tokenizer: &str, steps: &str| -> Vec<String> {
        [
            "train",
            "--config",
            "configs/tiny.toml",
            "--set",
            &format!("tokenizer.path={tokenizer:?}"),
            "--set",
            &format!("data.cache_dir={:?}", f.s("cache")),
            "--set",
            &format!("train.out_dir={ck:?}"),
            "--set",
            &format!("train.steps={steps}"),
            "--set",
            "train.warmup_steps=0",
            "--set",
            "train.eval_every=0",
            "--resume",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let rows = vec![
        Row {
            what: "train: a corpus too short for validation, with a tokenizer to train",
            args: tiny_train(&f, &[format!("data.train=[{:?}]", f.s("short.txt"))]),
            needles: vec!["too few".into()],
            absent: vec![newtok.clone(), newvocab.clone(), newrun.clone()],
        },
        Row {
            what: "train: model.vocab_size below the ids of the tokenizer trained for the run",
            args: tiny_train(&f, &["model.vocab_size=50".into()]),
            needles: vec![
                "model.vocab_size 50 is smaller than the".into(),
                "trained for".into(),
            ],
            absent: vec![newtok.clone(), newvocab.clone(), newrun.clone()],
        },
        Row {
            what: "train: a missing data.valid, with a tokenizer to train",
            args: tiny_train(&f, &[format!("data.valid=[{:?}]", f.s("missing.txt"))]),
            needles: vec!["data.valid".into(), "missing.txt".into()],
            absent: vec![newtok.clone(), newvocab.clone(), newrun.clone()],
        },
        Row {
            what: "data prepare: a missing data.valid, before a tokenizer is trained",
            args: [
                data_command("prepare", &newtok, &f.s("cache")),
                vec![
                    "--set".into(),
                    format!("data.valid=[{:?}]", f.s("missing.txt")),
                ],
            ]
            .concat(),
            needles: vec!["data.valid".into(), "missing.txt".into()],
            absent: vec![newtok.clone(), newvocab.clone()],
        },
        Row {
            what: "data preview: a batch whose rows cannot be addressed, before any work",
            args: [
                data_command("preview", &newtok, &f.s("cache")),
                vec!["--set".into(), "train.batch_size=100000000".into()],
            ]
            .concat(),
            needles: vec![
                "train.batch_size 100000000".into(),
                "2^31 - 1 positions".into(),
            ],
            absent: vec![newtok.clone(), newvocab.clone()],
        },
        Row {
            what: "train: train.out_dir under a file",
            args: tiny_train(&f, &[format!("train.out_dir={under_file:?}")]),
            needles: vec!["train.out_dir".into(), "plain.txt is a file".into()],
            absent: vec![newtok.clone()],
        },
        Row {
            what: "train: train.out_dir inside a corpus folder, whose metrics.jsonl is text there",
            args: tiny_train(
                &f,
                &[
                    format!("data.train=[{:?}]", f.s("corpdir")),
                    format!("train.out_dir={:?}", f.s("corpdir/run")),
                ],
            ),
            needles: vec![
                "inside the corpus folder".into(),
                "corpdir".into(),
                "metrics.jsonl".into(),
            ],
            absent: vec![newtok.clone(), f.path("corpdir/run")],
        },
        Row {
            what: "train: a folder where the run's metrics.jsonl goes",
            args: tiny_train(&f, &[format!("train.out_dir={:?}", f.s("blocked"))]),
            needles: vec!["metrics.jsonl is a folder".into()],
            absent: vec![newtok.clone()],
        },
        Row {
            what: "train: data.cache_dir under a file, before a tokenizer is trained",
            args: tiny_train(&f, &[format!("data.cache_dir={under_file:?}")]),
            needles: vec!["data.cache_dir".into(), "plain.txt is a file".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "data prepare: data.cache_dir under a file, before a tokenizer is trained",
            args: data_command("prepare", &newtok, &under_file),
            needles: vec!["data.cache_dir".into(), "plain.txt is a file".into()],
            absent: vec![newtok.clone()],
        },
        Row {
            what: "data verify: no tokenizer (verify trains none)",
            args: data_command("verify", &newtok, &f.s("cache")),
            needles: vec!["does not exist".into(), "masklm data prepare".into()],
            absent: vec![newtok.clone()],
        },
        Row {
            what: "data verify: a missing data.valid, named with its key",
            args: [
                data_command("verify", Path::new(&other_tok), &f.s("cache")),
                vec![
                    "--set".into(),
                    format!("data.valid=[{:?}]", f.s("missing.txt")),
                ],
            ]
            .concat(),
            needles: vec!["data.valid".into(), "missing.txt".into()],
            absent: vec![],
        },
        Row {
            what: "train: tokenizer.path under a file",
            args: tiny_train(
                &f,
                &[format!("tokenizer.path={:?}", f.s("plain.txt/t.json"))],
            ),
            needles: vec!["tokenizer.path".into(), "a file is in the way".into()],
            absent: vec![newrun.clone()],
        },
        Row {
            what: "train: tokenizer.path written as a folder",
            args: tiny_train(&f, &[format!("tokenizer.path={:?}", f.s("tokdir") + "/")]),
            needles: vec!["is a folder; give a file path".into()],
            absent: vec![f.path("tokdir"), newrun.clone()],
        },
        Row {
            what: "train: tokenizer.path named vocab.txt",
            args: tiny_train(&f, &[format!("tokenizer.path={newvocab:?}")]),
            needles: vec!["vocab.txt is the word list".into()],
            absent: vec![newvocab.clone(), newrun.clone()],
        },
        Row {
            what: "train: --resume of a train.out_dir that does not exist",
            args: [tiny_train(&f, &[]), vec!["--resume".into()]].concat(),
            needles: vec!["does not exist".into(), "without --resume".into()],
            absent: vec![newrun.clone(), newtok.clone()],
        },
        Row {
            what: "train: --resume of a run already at train.steps",
            args: resume_run(&f.s("tokenizer.json"), "2"),
            needles: vec![
                "is at step 2".into(),
                "nothing is left to train".into(),
                "above 2".into(),
            ],
            absent: vec![run.join("checkpoint-3")],
        },
        Row {
            what: "train: --resume with another tokenizer",
            // Steps left to train, so that the tokenizer is what is refused.
            args: resume_run(&other_tok, "3"),
            needles: vec![
                // tokenizer.vocab_size 300 sizes only a new tokenizer: said, not hidden.
                "using the existing tokenizer".into(),
                "another tokenizer".into(),
                "checkpoint-2/tokenizer.json".into(),
                "copy it out".into(),
            ],
            absent: vec![],
        },
        Row {
            what: "train: a model too large for any memory (a mistyped size)",
            args: tiny_train(&f, &["model.hidden_size=1000000".into()]),
            needles: vec!["parameters".into(), "model.hidden_size 1000000".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "train: a size past what any BERT has (its arithmetic would wrap)",
            args: tiny_train(&f, &["model.hidden_size=4611686018427387904".into()]),
            needles: vec!["model.hidden_size".into(), "at most 1048576".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "train: a micro-batch too large for any memory (a mistyped batch size)",
            args: tiny_train(&f, &["train.batch_size=20000000".into()]),
            needles: vec![
                "train.batch_size 20000000".into(),
                "at least".into(),
                "train.grad_accum_steps".into(),
            ],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "train: a micro-batch of more positions than i32 counts",
            args: tiny_train(&f, &["train.batch_size=100000000".into()]),
            needles: vec!["2^31 - 1 positions".into(), "train.batch_size".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "tokenizer: --out under a file",
            args: tokenize(&f.s("plain.txt/t.json")),
            needles: vec!["--out".into(), "a file is in the way".into()],
            absent: vec![],
        },
        Row {
            what: "tokenizer: --out named vocab.txt",
            args: tokenize(&newvocab.display().to_string()),
            needles: vec!["vocab.txt is the word list".into()],
            absent: vec![newvocab.clone()],
        },
        Row {
            what: "tokenizer: --out is the corpus",
            args: tokenize(&f.s("corpus.txt")),
            needles: vec!["would replace the corpus file".into()],
            absent: vec![],
        },
        row(
            "export: --out under a file",
            &["export", "--checkpoint", &ck, "--out", &under_file],
            &["--out", "plain.txt is a file"],
            &[],
        ),
        row(
            "export: --out is the checkpoint itself, with --force",
            &[
                "export",
                "--checkpoint",
                &ck,
                "--out",
                &run.join("checkpoint-2").display().to_string(),
                "--force",
            ],
            &["checkpoint or run folder", "even with --force"],
            &[&run.join("checkpoint-2/config.json")],
        ),
        row(
            "import: --out under a file",
            &[
                "import",
                "--hf",
                &fixture.display().to_string(),
                "--out",
                &under_file,
            ],
            &["--out", "plain.txt is a file"],
            &[],
        ),
        row(
            "eval: a Hugging Face folder",
            &["eval", "--checkpoint", &fixture.display().to_string()],
            &["Hugging Face folder", "masklm import --hf"],
            &[],
        ),
        row(
            "eval: --set of a key the weights fix",
            &["eval", "--checkpoint", &ck, "--set", "model.hidden_size=64"],
            &[
                "model.hidden_size",
                "the checkpoint fixes it",
                "data.text_field",
            ],
            &[],
        ),
        row(
            "eval: --set of a masking key, which evaluation does not use",
            &["eval", "--checkpoint", &ck, "--set", "data.mask_prob=0.5"],
            &["data.mask_prob", "fixed 15%"],
            &[],
        ),
    ];
    check(rows);
    // The refused writes changed nothing: the corpus is text, the checkpoint still loads.
    assert_eq!(
        std::fs::read_to_string(f.path("corpus.txt")).unwrap(),
        "the cat sat on the mat\n".repeat(50)
    );
    masklm(&["fill-mask", "--checkpoint", &ck, "the [MASK] sat"]).ok();
    // What the messages suggest works: eval reads another field of .jsonl records with --set.
    let e = masklm(&[
        "eval",
        "--checkpoint",
        &ck,
        "--corpus",
        &f.s("body.jsonl"),
        "--json",
    ]);
    assert!(
        e.code == 2 && e.stderr.contains("--set data.text_field"),
        "{}",
        e.stderr
    );
    masklm(&[
        "eval",
        "--checkpoint",
        &ck,
        "--corpus",
        &f.s("body.jsonl"),
        "--set",
        "data.text_field=body",
        "--json",
    ])
    .ok();
}

/// Outputs that would mix a run, a checkpoint and an export, or be half-written because a folder
/// stands where a file goes, inputs that leave nothing to score or that TOML refuses: refused up
/// front, nothing written.
#[test]
fn mixed_or_blocked_outputs_and_inputs_with_nothing_to_score() {
    let f = Files::new();
    let run = tiny_run(f.dir.path());
    let ck = run.display().to_string();
    let fixture = Path::new(common::ROOT).join("tests/fixtures/hf-tiny");
    let hf = fixture.display().to_string();
    let p = |name: &str| f.path(name);
    std::fs::write(p("oneline.txt"), "the cat sat\n").unwrap();
    std::fs::write(p("cyrillic.txt"), "Привет мир как дела\n".repeat(200)).unwrap();
    std::fs::write(p("number.jsonl"), "{\"text\": 5}\n").unwrap();
    std::fs::write(p("array.jsonl"), "[\"the cat sat\"]\n").unwrap();
    std::fs::write(p("kept.txt"), "someone else's file\n").unwrap();
    std::fs::create_dir_all(p("blocked/config.json")).unwrap();
    std::fs::create_dir_all(p("vocabdir/vocab.txt")).unwrap();
    std::fs::create_dir_all(p("corpusdir")).unwrap();
    std::fs::copy(p("oneline.txt"), p("corpusdir/a.txt")).unwrap();
    std::fs::create_dir(p("hfcopy")).unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(name), p("hfcopy").join(name)).unwrap();
    }
    let plotted = p("plotted");
    std::fs::create_dir_all(plotted.join("loss.png")).unwrap();
    std::fs::copy(run.join("metrics.jsonl"), plotted.join("metrics.jsonl")).unwrap();
    let tokenize = |out: &Path| -> Vec<String> {
        let corpus = f.s("corpusdir");
        let out = out.display().to_string();
        [
            "tokenizer",
            "--corpus",
            &corpus,
            "--vocab-size",
            "50",
            "--out",
            &out,
        ]
        .map(String::from)
        .into()
    };
    let (newtok, newrun) = (p("newtok/tokenizer.json"), p("newrun"));
    let checkpoint2 = run.join("checkpoint-2");
    // `export --force` of the run into `out` (under the test's folder).
    let export_forced = |what, out: &str, needle, absent: &Path| {
        let out = f.s(out);
        row(
            what,
            &["export", "--checkpoint", &ck, "--out", &out, "--force"],
            &[needle],
            &[absent],
        )
    };
    let rows = vec![
        row(
            "eval: a text too short for evaluation to mask any token",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--corpus",
                &f.s("oneline.txt"),
                "--set",
                "data.packing=line",
            ],
            &[
                "--corpus",
                "oneline.txt",
                "no token to score",
                "give more text",
            ],
            &[],
        ),
        row(
            "eval: a text the tokenizer does not cover (every token [UNK])",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--corpus",
                &f.s("cyrillic.txt"),
            ],
            &[
                "100% of its tokens are [UNK]",
                "give text the tokenizer covers",
            ],
            &[],
        ),
        row(
            "eval: --set data.seq_len past the model's positions",
            &["eval", "--checkpoint", &ck, "--set", "data.seq_len=65"],
            &["data.seq_len=65", "max_position_embeddings 64"],
            &[],
        ),
        row(
            "import: --set of a [model] key, which config.json gives",
            &[
                "import",
                "--hf",
                &hf,
                "--out",
                &f.s("imported"),
                "--set",
                "model.hidden_size=64",
            ],
            &[
                "import --set model.hidden_size=64",
                "config.json",
                "--init-from",
            ],
            &[&p("imported")],
        ),
        Row {
            what: "tokenizer: --out over an existing file, without --force",
            args: tokenize(&p("kept.txt")),
            needles: vec!["kept.txt exists".into(), "--force".into()],
            absent: vec![],
        },
        Row {
            what: "tokenizer: a folder where vocab.txt goes",
            args: tokenize(&p("vocabdir/tokenizer.json")),
            needles: vec!["vocab.txt is a folder".into()],
            absent: vec![p("vocabdir/tokenizer.json")],
        },
        Row {
            what: "tokenizer: --out inside the corpus folder",
            args: tokenize(&p("corpusdir/tokenizer.json")),
            needles: vec!["inside the corpus folder".into(), "corpusdir".into()],
            absent: vec![p("corpusdir/tokenizer.json"), p("corpusdir/vocab.txt")],
        },
        Row {
            what: "train: tokenizer.path inside the data.train folder",
            args: tiny_train(
                &f,
                &[
                    format!("data.train=[{:?}]", f.s("corpusdir")),
                    format!("tokenizer.path={:?}", f.s("corpusdir/sub/tokenizer.json")),
                ],
            ),
            needles: vec!["tokenizer.path".into(), "inside the corpus folder".into()],
            absent: vec![p("corpusdir/sub"), newrun.clone()],
        },
        Row {
            what: "train: train.out_dir is a checkpoint folder",
            args: tiny_train(
                &f,
                &[format!(
                    "train.out_dir={:?}",
                    checkpoint2.display().to_string()
                )],
            ),
            needles: vec!["is a checkpoint folder".into(), "--init-from".into()],
            absent: vec![checkpoint2.join("metrics.jsonl"), newtok.clone()],
        },
        Row {
            what: "train: train.out_dir is a Hugging Face folder",
            args: tiny_train(&f, &[format!("train.out_dir={:?}", f.s("hfcopy"))]),
            needles: vec!["Hugging Face model folder".into()],
            absent: vec![p("hfcopy/metrics.jsonl"), newtok.clone()],
        },
        Row {
            what: "train: an integer TOML cannot hold",
            args: tiny_train(&f, &["train.steps=99999999999999999999".into()]),
            needles: vec!["--set train.steps=".into(), "not a valid TOML value".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        Row {
            what: "train: an unclosed list",
            args: tiny_train(&f, &["data.train=[\"a.txt\",".into()]),
            needles: vec!["--set data.train=".into(), "not a valid TOML value".into()],
            absent: vec![newtok.clone(), newrun.clone()],
        },
        export_forced(
            "export: --out named ..",
            "nothere/..",
            "give the new folder by its name",
            &p("model.safetensors"),
        ),
        export_forced(
            "export: --force into a folder where a file to write is a folder",
            "blocked",
            "config.json is a folder",
            &p("blocked/model.safetensors"),
        ),
        row(
            "import: --out is a run folder, with --force",
            &["import", "--hf", &hf, "--out", &ck, "--force"],
            &["training run's folder", "even with --force"],
            &[&run.join("model.bpk")],
        ),
        row(
            "import: --out is a trained checkpoint, with --force",
            &[
                "import",
                "--hf",
                &hf,
                "--out",
                &checkpoint2.display().to_string(),
                "--force",
            ],
            &["holds a trained checkpoint", "even with --force"],
            &[],
        ),
        row(
            "plot: a checkpoint folder, whose run folder holds metrics.jsonl",
            &["plot", &checkpoint2.display().to_string()],
            &["is a checkpoint folder", &format!("masklm plot {ck}")],
            &[&checkpoint2.join("loss.png")],
        ),
        row(
            "plot: a folder where loss.png goes",
            &["plot", &plotted.display().to_string()],
            &["loss.png is a folder"],
            &[&plotted.join("accuracy.png")],
        ),
        row(
            "bench: a mask rate that selects nothing",
            &[
                "bench",
                "--config",
                "configs/tiny.toml",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--set",
                &format!("tokenizer.path={:?}", f.s("tokenizer.json")),
                "--set",
                &format!("data.cache_dir={:?}", f.s("cache")),
                "--set",
                "data.mask_prob=1e-9",
            ],
            &["no timed step selected a token", "data.mask_prob"],
            &[],
        ),
        row(
            "eval: a .jsonl record whose text is a number",
            &[
                "eval",
                "--checkpoint",
                &ck,
                "--corpus",
                &f.s("number.jsonl"),
            ],
            &["number.jsonl", "is a number, not a string"],
            &[],
        ),
        row(
            "eval: a .jsonl record that is an array",
            &["eval", "--checkpoint", &ck, "--corpus", &f.s("array.jsonl")],
            &["array.jsonl", "not a JSON object but an array"],
            &[],
        ),
    ];
    check(rows);
    assert_eq!(
        std::fs::read_to_string(p("kept.txt")).unwrap(),
        "someone else's file\n"
    );
    // What the messages say works: --force replaces, and import takes data keys checked against
    // config.json's 64 positions (the embedded default has 32).
    masklm(&[&tokenize(&p("kept.txt"))[..], &["--force".to_string()]].concat()).ok();
    assert!(
        std::fs::read_to_string(p("kept.txt"))
            .unwrap()
            .contains("[MASK]")
    );
    masklm(&[
        "import",
        "--hf",
        &hf,
        "--out",
        &f.s("imported"),
        "--set",
        "data.seq_len=50",
    ])
    .ok();
    let saved = std::fs::read_to_string(p("imported/config.toml")).unwrap();
    assert!(saved.contains("seq_len = 50"), "{saved}");
}

/// rayon sizes its pool from RAYON_NUM_THREADS where train.threads does not: a count past
/// train.threads' ceiling is refused up front, whatever the command; what rayon ignores is too.
#[test]
fn a_rayon_thread_count_past_the_ceiling_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").display().to_string();
    let run = |vars: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_masklm"));
        c.args(["plot", &missing])
            .env_remove("RAYON_NUM_THREADS")
            .env_remove("RAYON_RS_NUM_CPUS");
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for (vars, said) in [
        (
            &[("RAYON_NUM_THREADS", "100000")][..],
            "RAYON_NUM_THREADS=100000",
        ),
        // The older name counts where the newer is not a number.
        (
            &[("RAYON_NUM_THREADS", "many"), ("RAYON_RS_NUM_CPUS", "5000")][..],
            "RAYON_RS_NUM_CPUS=5000",
        ),
    ] {
        let (code, stderr) = run(vars);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{said} asks for more than 1024 threads")),
            "{stderr}"
        );
    }
    // 0, what is not a number, and the ceiling itself leave the command to go on (to its own
    // refusal of the missing folder).
    for value in ["0", "lots", "1024"] {
        let (code, stderr) = run(&[("RAYON_NUM_THREADS", value)]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("missing") && !stderr.contains("RAYON"),
            "{stderr}"
        );
    }
}

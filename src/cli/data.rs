//! `masklm data prepare | verify | preview`: the token stores of a config, and corrupted
//! batches exactly as training sees them.

use super::ConfigArgs;
use crate::config::BackendName;
use crate::data::batches::{Batch, TrainStream};
use crate::data::masking::IGNORE_LABEL;
use crate::data::store::{self, TokenStore};
use crate::data::{
    Datasets, cache_dir, check_data, corpora, corpus, corruption, load_or_train_tokenizer,
    save_tokenizer, store_built,
};
use crate::error::UsageError;
use crate::tokenizer::BertTokenizer;
use crate::train::{Pass, check_batch_fits};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Tokenize data.train and data.valid into token stores (train, eval and bench do it
    /// themselves when a store is missing or stale)
    Prepare(ConfigArgs),
    /// Check every shard of the config's token stores against its checksum
    Verify(ConfigArgs),
    /// Print the first training micro-batches, corrupted as training will see them
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// How many micro-batches to print
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batches: usize,
    /// One JSON object per batch and line: input_ids, attention_mask, labels, original_ids,
    /// special_ids
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Prepare(a) => prepare(a),
        DataCommand::Verify(a) => verify(a),
        DataCommand::Preview(a) => preview(a),
    }
}

fn describe_store(what: &str, s: &TokenStore) -> String {
    let m = s.manifest();
    format!(
        "{what} store {}: {} tokens (u{} ids), {} lines, {} documents, {} shard(s), {}",
        s.dir().display(),
        m.tokens(),
        m.id_width * 8,
        m.lines(),
        m.documents(),
        m.shards.len(),
        store::megabytes(m.bytes())
    )
}

fn prepare(a: ConfigArgs) -> Result<()> {
    let cfg = a.load()?;
    super::set_threads(cfg.train.threads);
    check_data(&cfg)?;
    // A tokenizer trained now is saved once its stores are built: a corpus refused leaves none
    // (training it again gives the same tokenizer, whose stores are then current).
    let (tok, fresh) = load_or_train_tokenizer(&cfg)?;
    let mut built_stores = Vec::new();
    for (what, _, paths) in corpora(&cfg) {
        let (store, built) = store_built(paths, &cfg, &tok)?;
        let state = if built { "built" } else { "current" };
        built_stores.push(format!("{} ({state})", describe_store(what, &store)));
    }
    if fresh {
        save_tokenizer(&cfg, &tok)?;
    }
    for line in built_stores {
        crate::outln!("{line}")?;
    }
    Ok(())
}

fn verify(a: ConfigArgs) -> Result<()> {
    let cfg = a.load()?;
    // Checks the stores built with the tokenizer; it trains none.
    let path = &cfg.tokenizer.path;
    if !path.exists() {
        crate::usage!(
            "tokenizer.path {} does not exist, so no store was built with it; `masklm data \
             prepare` trains it and builds the stores",
            path.display()
        );
    }
    let tok = BertTokenizer::load(path)?;
    let cache = cache_dir(&cfg);
    let (mut problems, mut stale) = (Vec::new(), false);
    for (what, key, paths) in corpora(&cfg) {
        let files = corpus::expand_paths(paths).with_context(|| key)?;
        let (dir, want) = store::locate(&files, &tok, &cfg.data.text_field, &cache)?;
        let s = match TokenStore::open_if_current(&dir, &want)? {
            Ok(s) => s,
            Err(why) => {
                problems.push(format!(
                    "{what} store {}: {why}; `masklm data prepare` builds it",
                    dir.display()
                ));
                continue;
            }
        };
        let (bad, marked) = s.verify_all();
        let any = !bad.is_empty();
        if !any {
            crate::outln!("{} — every shard checks", describe_store(what, &s))?;
        }
        problems.extend(bad.into_iter().map(|b| format!("{what} store shard {b}")));
        match marked {
            Ok(()) => stale |= any,
            Err(fix) => problems.push(format!("{what} store: {fix}")),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = problems.join("\n");
    if stale {
        msg.push_str(
            "\nthe damaged stores marked stale are tokenized again by the next `masklm data \
             prepare` (or train, eval, bench)",
        );
    }
    Err(UsageError::new(msg).into())
}

fn preview(a: PreviewArgs) -> Result<()> {
    if a.batches == 0 {
        crate::usage!("--batches 0 would print nothing; give 1 or more");
    }
    let cfg = a.config.load()?;
    super::set_threads(cfg.train.threads);
    check_data(&cfg)?;
    // The batches are built on the host whatever the backend: their rows must fit here.
    let sizes = crate::model::BertConfig::new(&cfg.model, cfg.tokenizer.vocab_size, 0);
    let (batch, seq_len) = (cfg.train.batch_size, cfg.data.seq_len);
    let precision = cfg.train.precision;
    check_batch_fits(
        BackendName::Flex,
        &sizes,
        precision,
        Pass::Rows,
        batch,
        seq_len,
    )?;
    let (tok, fresh) = load_or_train_tokenizer(&cfg)?;
    let data = Datasets::prepare(&cfg, &tok)?;
    if fresh {
        save_tokenizer(&cfg, &tok)?;
    }
    let mut stream = TrainStream::new(data.train, corruption(&cfg, &tok), cfg.train.batch_size);
    let out = std::io::stdout();
    let mut out = out.lock();
    for k in 0..a.batches {
        let pos = (k * cfg.train.batch_size) as u64;
        let b = stream.batch_at(pos)?;
        if a.json {
            serde_json::to_writer(&mut out, &BatchJson::new(&b, &tok, pos))
                .context("writing to standard output")?;
            writeln!(out).context("writing to standard output")?;
        } else {
            write_readable(&mut out, &b, &tok, k, pos).context("writing to standard output")?;
        }
    }
    Ok(())
}

/// One batch as a JSON line, each id field `[rows][seq_len]`, serialized straight from the
/// batch's buffers: a batch of millions of tokens never becomes a JSON tree in memory (about
/// 150 bytes a token). Fields in alphabetical order, as a `serde_json::Value` writes them.
#[derive(Serialize)]
struct BatchJson<'a> {
    attention_mask: Vec<&'a [u8]>,
    input_ids: Vec<&'a [u32]>,
    labels: Vec<&'a [i32]>,
    original_ids: Vec<&'a [u32]>,
    position: u64,
    special_ids: crate::tokenizer::SpecialIds,
}

impl<'a> BatchJson<'a> {
    fn new(b: &'a Batch, tok: &BertTokenizer, position: u64) -> Self {
        Self {
            attention_mask: b.attention_mask.chunks(b.seq_len).collect(),
            input_ids: b.input_ids.chunks(b.seq_len).collect(),
            labels: b.labels.chunks(b.seq_len).collect(),
            original_ids: b.original_ids.chunks(b.seq_len).collect(),
            position,
            special_ids: tok.specials(),
        }
    }
}

/// Each row as tokens, a selected one shown as `⟦original→input⟧` (`⟦original⟧` when it was
/// left unchanged), trailing padding folded into `[PAD]×n`.
fn write_readable(
    out: &mut impl Write,
    b: &Batch,
    tok: &BertTokenizer,
    k: usize,
    pos: u64,
) -> Result<()> {
    writeln!(
        out,
        "batch {k} (stream rows {pos}..{}), {} positions selected",
        pos + b.batch_size as u64,
        b.selected
    )?;
    let pad = tok.specials().pad;
    for r in 0..b.batch_size {
        let range = r * b.seq_len..(r + 1) * b.seq_len;
        let (inp, orig, lab) = (
            &b.input_ids[range.clone()],
            &b.original_ids[range.clone()],
            &b.labels[range],
        );
        let n_pad = orig.iter().rev().take_while(|&&t| t == pad).count();
        let mut words = Vec::new();
        for i in 0..b.seq_len - n_pad {
            let o = tok.token(orig[i]);
            words.push(if lab[i] == IGNORE_LABEL {
                o
            } else if inp[i] == orig[i] {
                format!("⟦{o}⟧")
            } else {
                format!("⟦{o}→{}⟧", tok.token(inp[i]))
            });
        }
        if n_pad > 0 {
            words.push(format!("[PAD]×{n_pad}"));
        }
        let n_sel = lab.iter().filter(|&&l| l != IGNORE_LABEL).count();
        writeln!(out, "  row {r} ({n_sel} selected): {}", words.join(" "))?;
    }
    Ok(())
}

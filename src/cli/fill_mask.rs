//! `masklm fill-mask`: top-k predictions for each [MASK], in HF's fill-mask format.

use crate::config::BackendName;
use crate::error::UsageError;
use crate::fill_mask::{Padding, Wanted, fill_mask, to_hf_json};
use crate::io::{Line, read_line_capped};
use crate::train::{BackendKey, checkpoint, device_for};
use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The refusal of TEXT arguments that are all blank (a blank `--input` line is skipped instead).
const ALL_BLANK: &str =
    "every TEXT argument is blank; give a text with [MASK], e.g. \"the [MASK] sat on the mat\"";

#[derive(Debug, Args)]
pub struct FillMaskArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Candidates per mask
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// Rank only this token (repeat the flag for several: `--target a --target b`), as HF's
    /// pipeline(..., targets=[...]): its probability over the whole vocabulary; a text that is
    /// not one token gives its first
    #[arg(long = "target", value_name = "TOKEN")]
    pub targets: Vec<String>,
    /// One JSON line per input text, as HF's pipeline("fill-mask") returns it; with --input,
    /// one per line of the file, in order: null for a blank line, {"error": ...} for a text that
    /// cannot be filled
    #[arg(long)]
    pub json: bool,
    /// Texts with one or more [MASK]
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// A file with one text per line (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Backend to run the model on
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: BackendName,
}

pub fn run(a: FillMaskArgs) -> Result<()> {
    if a.top_k == 0 {
        crate::usage!("--top-k 0 asks for no candidates; use 1 or more");
    }
    if a.texts.is_empty() && a.input.is_none() {
        crate::usage!("no input: give TEXT arguments with [MASK], or --input FILE");
    }
    if a.input.is_none() && a.texts.iter().all(|t| t.trim().is_empty()) {
        crate::usage!("{ALL_BLANK}");
    }
    let cannot = |f: &Path, e: std::io::Error| {
        UsageError::new(format!("cannot read --input {}: {e}", f.display()))
    };
    // `-` is standard input, as in most command-line tools.
    let mut input: Option<(&PathBuf, Box<dyn BufRead>)> = match &a.input {
        Some(f) if f.as_os_str() == "-" => Some((f, Box::new(std::io::stdin().lock()))),
        Some(f) => Some((
            f,
            Box::new(BufReader::new(File::open(f).map_err(|e| cannot(f, e))?)),
        )),
        None => None,
    };
    let device = device_for(a.backend, BackendKey::Flag)?;
    let ck = checkpoint::load(&a.checkpoint, &device).context("loading the checkpoint")?;
    let targets = if a.targets.is_empty() {
        None
    } else {
        let (ids, notes) = crate::fill_mask::target_ids(&ck.tokenizer, &a.targets)?;
        for note in notes {
            crate::errln!("note: {note}");
        }
        Some(ids)
    };
    let mut answers = Answers {
        json: a.json,
        top_k: a.top_k,
        targets,
        trained_len: ck.trained_len(),
        ck,
        padding: Padding::for_device(&device),
        device,
        texts: 0,
        failed: 0,
        noted: false,
    };
    for (i, text) in a.texts.iter().enumerate() {
        answers.answer(Ok(text), || format!("TEXT argument {}", i + 1))?;
    }
    // Each line answered as it is read, so a pipe gets its answers as it goes.
    if let Some((f, reader)) = &mut input {
        let mut buf = Vec::new();
        for n in 1.. {
            let line = match read_line_capped(reader, &mut buf, MAX_INPUT_LINE)
                .map_err(|e| cannot(f, e))?
            {
                Line::End => break,
                Line::Read => std::str::from_utf8(&buf)
                    .map(|l| l.strip_suffix('\r').unwrap_or(l))
                    .map_err(|e| format!("not UTF-8 (byte {}); save it as UTF-8", e.valid_up_to())),
                Line::TooLong => {
                    reader.skip_until(b'\n').map_err(|e| cannot(f, e))?;
                    Err(format!(
                        "longer than {}; fill-mask takes one text per line, and only its first \
                         max_position_embeddings tokens can be read",
                        crate::io::size_words(MAX_INPUT_LINE)
                    ))
                }
            };
            answers.answer(line, || format!("line {n} of --input {}", f.display()))?;
        }
    }
    if answers.texts == 0 {
        match &a.input {
            Some(f) => crate::usage!(
                "--input {} has no non-blank line; write one text with [MASK] per line",
                f.display()
            ),
            None => crate::usage!("{ALL_BLANK}"),
        }
    }
    if answers.failed > 0 {
        crate::usage!(
            "{} of {} inputs could not be filled (see above)",
            answers.failed,
            answers.texts
        );
    }
    Ok(())
}

/// Answers texts one at a time and counts them.
struct Answers {
    json: bool,
    top_k: usize,
    /// `--target`'s ids, the only candidates when given.
    targets: Option<Vec<u32>>,
    trained_len: Option<usize>,
    ck: checkpoint::Loaded,
    device: Device,
    padding: Padding,
    /// Non-blank texts seen, and those that could not be filled.
    texts: usize,
    failed: usize,
    /// Whether the note on positions past the trained length was given.
    noted: bool,
}

impl Answers {
    /// Prints the answer to `text` (or the reason it could not be read); `what` names it in
    /// messages. Readable output skips blank lines; JSON answers one with `null`, so that output
    /// line i answers input line i.
    fn answer(&mut self, text: Result<&str, String>, what: impl Fn() -> String) -> Result<()> {
        if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            if self.json {
                crate::outln!("null")?;
            }
            return Ok(());
        }
        self.texts += 1;
        let max_len = self.ck.config.model.max_position_embeddings;
        let (model, tok) = (&self.ck.model, &self.ck.tokenizer);
        let filled = text.map_err(anyhow::Error::msg).and_then(|t| {
            let (device, padding) = (&self.device, self.padding);
            let wanted = Wanted {
                top_k: self.top_k,
                targets: self.targets.as_deref(),
            };
            let per_mask = fill_mask(model, tok, t, wanted, max_len, device, padding)?;
            Ok((t, per_mask))
        });
        match filled {
            Ok((t, per_mask)) => {
                self.note_untrained_positions(t, &what)?;
                if self.json {
                    crate::outln!("{}", to_hf_json(&per_mask))?;
                } else {
                    print_readable(t, &per_mask)?;
                }
            }
            Err(e) => {
                self.failed += 1;
                let message = format!("{}: {e:#}", what());
                crate::errln!("error: {message}");
                if self.json {
                    crate::outln!("{}", serde_json::json!({ "error": message }))?;
                }
            }
        }
        Ok(())
    }

    /// Says once when a text reaches past the rows the checkpoint was trained on: those position
    /// embeddings are as initialised, so its predictions are poor.
    fn note_untrained_positions(&mut self, text: &str, what: &impl Fn() -> String) -> Result<()> {
        let Some(trained) = self.trained_len.filter(|_| !self.noted) else {
            return Ok(());
        };
        let len = self.ck.tokenizer.encode_with_specials(text)?.len();
        if len > trained {
            self.noted = true;
            crate::errln!(
                "note: {} is {len} tokens long with [CLS] and [SEP], longer than the rows this \
                 checkpoint was trained on (data.seq_len {trained}): the position embeddings past \
                 {trained} are as initialised (unless the run started from imported weights), so \
                 expect poor predictions there",
                what()
            );
        }
        Ok(())
    }
}

/// `text`, then each mask's candidates with their probabilities.
pub fn print_readable(text: &str, per_mask: &[Vec<crate::fill_mask::Candidate>]) -> Result<()> {
    crate::outln!("{text}")?;
    for (m, cands) in per_mask.iter().enumerate() {
        let list: Vec<String> = cands
            .iter()
            .map(|c| format!("{} ({:.3})", c.token_str, c.score))
            .collect();
        crate::outln!("  [MASK] {}: {}", m + 1, list.join(", "))?;
    }
    Ok(())
}

/// The longest `--input` line accepted. Far beyond any model's max_position_embeddings, and a
/// bound on what one line can make the reader hold.
const MAX_INPUT_LINE: u64 = 1 << 20;

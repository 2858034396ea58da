//! `masklm fill-mask`: top-k predictions for each [MASK], in HF's fill-mask format.

use crate::error::UsageError;
use crate::fill_mask::{fill_mask, to_hf_json};
use crate::io::{Line, read_line_capped};
use crate::train::checkpoint;
use anyhow::{Context, Result};
use burn::prelude::*;
use clap::Args;
use std::io::BufReader;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct FillMaskArgs {
    /// A run folder (its newest checkpoint) or one checkpoint-N folder
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Candidates per mask
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// One JSON line per input text, as HF's pipeline("fill-mask") returns it; with --input,
    /// one per line of the file, in order: null for a blank line, {"error": ...} for a text that
    /// cannot be filled
    #[arg(long)]
    pub json: bool,
    /// Texts with one or more [MASK]
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// A file with one text per line
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

pub fn run(a: FillMaskArgs) -> Result<()> {
    if a.top_k == 0 {
        crate::usage!("--top-k 0 asks for no candidates; use 1 or more");
    }
    let mut texts = a.texts.clone();
    if let Some(f) = &a.input {
        texts.extend(input_lines(f)?);
    }
    // Readable output skips blank lines; JSON keeps one output line per input line, so that a
    // script can pair them.
    let blank = |t: &String| t.trim().is_empty();
    if !a.json {
        texts.retain(|t| !blank(t));
    }
    if texts.iter().all(blank) {
        if let Some(f) = &a.input {
            crate::usage!(
                "--input {} has no non-blank line; write one text with [MASK] per line",
                f.display()
            );
        }
        crate::usage!("no input: give TEXT arguments with [MASK], or --input FILE");
    }
    let device = Device::flex();
    let ck = checkpoint::load(&a.checkpoint, &device).context("loading the checkpoint")?;
    let max_len = ck.config.model.max_position_embeddings;
    let mut failed = 0;
    for text in &texts {
        if blank(text) {
            crate::outln!("null")?;
            continue;
        }
        match fill_mask(&ck.model, &ck.tokenizer, text, a.top_k, max_len, &device) {
            Ok(per_mask) if a.json => crate::outln!("{}", to_hf_json(&per_mask))?,
            Ok(per_mask) => print_readable(text, &per_mask)?,
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
                if a.json {
                    crate::outln!("{}", serde_json::json!({ "error": format!("{e:#}") }))?;
                }
            }
        }
    }
    if failed > 0 {
        crate::usage!(
            "{failed} of {} inputs could not be filled (see above)",
            texts.iter().filter(|t| !blank(t)).count()
        );
    }
    Ok(())
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

/// The lines of `--input` without their line ends, read one at a time. A longer line than
/// [`MAX_INPUT_LINE`] is refused after reading at most that much of it, so a 200 MB line without
/// a newline never sits in memory.
fn input_lines(f: &Path) -> Result<Vec<String>> {
    let cannot =
        |e: std::io::Error| UsageError::new(format!("cannot read --input {}: {e}", f.display()));
    let mut reader = BufReader::new(std::fs::File::open(f).map_err(cannot)?);
    let (mut lines, mut buf) = (Vec::new(), Vec::new());
    for n in 1.. {
        match read_line_capped(&mut reader, &mut buf, MAX_INPUT_LINE).map_err(cannot)? {
            Line::End => break,
            Line::Read => {}
            Line::TooLong => crate::usage!(
                "line {n} of --input {} is longer than {}; fill-mask takes one text per line, \
                 and only its first max_position_embeddings tokens can be read",
                f.display(),
                crate::io::size_words(MAX_INPUT_LINE)
            ),
        }
        let line = std::str::from_utf8(&buf).map_err(|e| {
            UsageError::new(format!(
                "line {n} of --input {} is not UTF-8 (byte {} of the line); save it as UTF-8",
                f.display(),
                e.valid_up_to()
            ))
        })?;
        lines.push(line.strip_suffix('\r').unwrap_or(line).to_string());
    }
    Ok(lines)
}

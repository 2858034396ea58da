//! `masklm tokenizer`: train a WordPiece tokenizer on a corpus.

use crate::data::{corpus, train_tokenizer};
use crate::error::UsageError;
use crate::tokenizer::{BertTokenizer, SPECIAL_TOKENS};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// Corpus files or folders (.txt, .jsonl, either .gz or .zst; a folder's, sorted)
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// Target vocabulary size, special tokens included (BERT: 30522)
    #[arg(long, value_name = "N")]
    pub vocab_size: usize,
    /// Output tokenizer.json; vocab.txt is written beside it
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Keep case and accents (default: lowercase and strip accents, as BERT uncased)
    #[arg(long)]
    pub cased: bool,
    /// Replace an existing --out and the vocab.txt beside it
    #[arg(long)]
    pub force: bool,
    /// The field of each .jsonl record that holds its text
    #[arg(long, value_name = "NAME", default_value = corpus::DEFAULT_TEXT_FIELD)]
    pub text_field: String,
}

pub fn run(a: TokenizerArgs) -> Result<()> {
    if a.vocab_size <= SPECIAL_TOKENS.len() {
        return Err(UsageError::new(format!(
            "--vocab-size {} is too small for the {} special tokens; use at least {}",
            a.vocab_size,
            SPECIAL_TOKENS.len(),
            SPECIAL_TOKENS.len() + 1
        ))
        .into());
    }
    BertTokenizer::check_save_path(&a.out, "--out", &a.corpus)?;
    let files = corpus::expand_paths(&a.corpus)?;
    // The tokenizer and vocab.txt must not be written over the text they are trained on.
    for written in [a.out.clone(), a.out.with_file_name("vocab.txt")] {
        let Ok(w) = written.canonicalize() else {
            continue;
        };
        if files.iter().any(|f| f.canonicalize().is_ok_and(|f| f == w)) {
            crate::usage!(
                "--out {}: writing it would replace the corpus file {}; write the tokenizer \
                 elsewhere",
                a.out.display(),
                written.display()
            );
        }
    }
    if !a.force {
        for written in [a.out.clone(), a.out.with_file_name("vocab.txt")] {
            if written.exists() {
                crate::usage!(
                    "--out {}: {} exists; pass --force to replace it, or write the tokenizer \
                     elsewhere",
                    a.out.display(),
                    written.display()
                );
            }
        }
    }
    let tok = train_tokenizer(&files, a.vocab_size, !a.cased, &a.text_field)?;
    tok.save(&a.out)?;
    crate::outln!(
        "wrote {} and {} (vocabulary of {} tokens)",
        a.out.display(),
        a.out.with_file_name("vocab.txt").display(),
        tok.vocab_size()
    )?;
    Ok(())
}

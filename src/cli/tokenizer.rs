//! `masklm tokenizer`: train a WordPiece tokenizer on a corpus.

use crate::config::MAX_VOCAB_SIZE;
use crate::data::{corpus, train_tokenizer};
use crate::error::UsageError;
use crate::tokenizer::{BertTokenizer, SPECIAL_TOKENS, WordPieceTraining};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

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
    /// Least number of times a pair of pieces must occur to be merged (HF's min_frequency)
    #[arg(long, value_name = "N", default_value_t = WordPieceTraining::new(0, true).min_frequency)]
    pub min_frequency: u64,
    /// Most distinct characters kept before merging, the rarest dropped (HF's limit_alphabet)
    #[arg(long, value_name = "N", default_value_t = WordPieceTraining::new(0, true).limit_alphabet)]
    pub limit_alphabet: usize,
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
    if a.vocab_size > MAX_VOCAB_SIZE {
        crate::usage!(
            "--vocab-size {} is above {MAX_VOCAB_SIZE}, the most masklm accepts (BERT uses 30522)",
            a.vocab_size
        );
    }
    if a.limit_alphabet == 0 {
        crate::usage!(
            "--limit-alphabet 0 keeps no character, so every word would be [UNK]; use at least \
             the characters of your script (HF's default: 1000)"
        );
    }
    BertTokenizer::check_save_path(&a.out, "--out", &a.corpus)?;
    let files = corpus::expand_paths(&a.corpus)?;
    // The tokenizer and vocab.txt must not be written over the text they are trained on, nor
    // over an earlier tokenizer unless --force says so.
    let vocab = a.out.with_file_name("vocab.txt");
    let written = [a.out.as_path(), vocab.as_path()];
    let real_files: Vec<PathBuf> = files.iter().filter_map(|f| f.canonicalize().ok()).collect();
    let is_corpus = |w: &Path| w.canonicalize().is_ok_and(|w| real_files.contains(&w));
    if let Some(w) = written.into_iter().find(|w| is_corpus(w)) {
        crate::usage!(
            "--out {}: writing it would replace the corpus file {}; write the tokenizer elsewhere",
            a.out.display(),
            w.display()
        );
    }
    if !a.force
        && let Some(w) = written.into_iter().find(|w| w.exists())
    {
        crate::usage!(
            "--out {}: {} exists; pass --force to replace it, or write the tokenizer elsewhere",
            a.out.display(),
            w.display()
        );
    }
    let how = WordPieceTraining {
        min_frequency: a.min_frequency,
        limit_alphabet: a.limit_alphabet,
        ..WordPieceTraining::new(a.vocab_size, !a.cased)
    };
    let tok = train_tokenizer(&files, &how, &a.text_field)?;
    tok.save(&a.out)?;
    crate::outln!(
        "wrote {} and {} (vocabulary of {} tokens)",
        a.out.display(),
        vocab.display(),
        tok.vocab_size()
    )?;
    Ok(())
}

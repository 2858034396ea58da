//! The data pipeline: text → ids → rows → corrupted batches. Only the batcher beyond this
//! module touches tensors.

pub mod batcher;
pub mod batches;
pub mod corpus;
pub mod masking;
pub mod order;
pub mod prepare;
pub mod repeats;
pub mod rows;
pub mod store;

use crate::config::Config;
use crate::error::UsageError;
use crate::tokenizer::BertTokenizer;
use anyhow::{Context, Result};
use batches::{Corruption, RowSet};
use masking::MaskingParams;
use std::path::PathBuf;
use std::sync::Arc;
use store::TokenStore;

/// The tokenizer of a config and whether it was trained just now (`true`: not saved yet, so a
/// run that fails before it starts leaves nothing behind; [`save_tokenizer`] writes it). An
/// existing `tokenizer.path` is used as it is, whatever `tokenizer.vocab_size` says (that key
/// sizes a new tokenizer only); a difference is said on stderr. Refuses a tokenizer with more ids
/// than `model.vocab_size` rows.
pub fn load_or_train_tokenizer(cfg: &Config) -> Result<(BertTokenizer, bool)> {
    let (tok, fresh) = load_or_train_tokenizer_unchecked(cfg)?;
    let name = cfg.tokenizer.path.display().to_string();
    let name = if fresh {
        format!("trained for {name}")
    } else {
        name
    };
    cfg.model.vocab_rows(tok.vocab_size(), &name)?;
    Ok((tok, fresh))
}

fn load_or_train_tokenizer_unchecked(cfg: &Config) -> Result<(BertTokenizer, bool)> {
    let path = &cfg.tokenizer.path;
    if path.exists() {
        let tok = BertTokenizer::load(path)?;
        let lowercase = crate::hf::tokenizer::lowercases(&tok.to_json()?);
        let t = &cfg.tokenizer;
        if tok.vocab_size() != t.vocab_size || lowercase != t.lowercase {
            let case = |lower: bool| if lower { "uncased" } else { "cased" };
            crate::errln!(
                "note: using the existing tokenizer {} ({} tokens, {}) as it is; \
                 tokenizer.vocab_size {} and tokenizer.lowercase {} ({}) only shape a new one \
                 (delete the file to train one)",
                path.display(),
                tok.vocab_size(),
                case(lowercase),
                t.vocab_size,
                t.lowercase,
                case(t.lowercase)
            );
        }
        return Ok((tok, false));
    }
    let corpus = [&cfg.data.train[..], &cfg.data.valid[..]].concat();
    BertTokenizer::check_save_path(path, "tokenizer.path", &corpus)?;
    let files = corpus::expand_paths(&cfg.data.train)?;
    crate::errln!(
        "training a WordPiece tokenizer (vocab {}) on {} → {}",
        cfg.tokenizer.vocab_size,
        store::describe(&files),
        path.display()
    );
    let (vocab, lower) = (cfg.tokenizer.vocab_size, cfg.tokenizer.lowercase);
    let how = crate::tokenizer::WordPieceTraining::new(vocab, lower);
    let tok = train_tokenizer(&files, &how, &cfg.data.text_field)?;
    Ok((tok, true))
}

/// Writes a tokenizer [`load_or_train_tokenizer`] trained to `tokenizer.path`.
pub fn save_tokenizer(cfg: &Config, tok: &BertTokenizer) -> Result<()> {
    let path = &cfg.tokenizer.path;
    tok.save(path)
        .with_context(|| format!("saving tokenizer to {}", path.display()))
}

/// Trains on the pieces of `files`, stopping at the first read error (which is returned).
pub fn train_tokenizer(
    files: &[PathBuf],
    how: &crate::tokenizer::WordPieceTraining,
    text_field: &str,
) -> Result<BertTokenizer> {
    let vocab_size = how.vocab_size;
    let mut first_err: Option<anyhow::Error> = None;
    let mut n_pieces = 0usize;
    let pieces = corpus::PieceReader::new(files.to_vec(), text_field).map_while(|p| match p {
        Ok(p) => {
            n_pieces += 1;
            Some(p.text)
        }
        Err(e) => {
            first_err = Some(e);
            None
        }
    });
    let tok = BertTokenizer::train(pieces, how);
    if let Some(e) = first_err {
        return Err(e);
    }
    if n_pieces == 0 {
        return Err(UsageError::new(format!(
            "corpus {} has no text to train a tokenizer on",
            store::describe(files)
        ))
        .into());
    }
    let tok = tok?;
    // Text that is only whitespace, control characters or NUL bytes gives pieces but no words:
    // the "vocabulary" would be the special tokens alone, useless to train on.
    if tok.vocab_size() <= crate::tokenizer::SPECIAL_TOKENS.len() {
        return Err(UsageError::new(format!(
            "corpus {} has no words to train a tokenizer on (only whitespace or control \
             characters); give plain text, one sentence or paragraph per line",
            store::describe(files)
        ))
        .into());
    }
    if tok.vocab_size() < vocab_size {
        // At a min frequency of 1 (or 0) every pair merges until each word is one token: only
        // more text gives more.
        let why = if how.min_frequency > 1 {
            format!(
                "WordPiece stops when no two pieces occur together {} times or more (min \
                 frequency; a larger corpus, or a lower --min-frequency, gives more)",
                how.min_frequency
            )
        } else {
            "WordPiece stops when every word of the corpus is one token (a larger corpus gives \
             more)"
                .to_string()
        };
        crate::errln!(
            "note: {} gave a vocabulary of {} tokens, fewer than the {vocab_size} asked: {why}",
            store::describe(files),
            tok.vocab_size(),
        );
    } else if tok.vocab_size() > vocab_size {
        crate::errln!(
            "note: {} gave a vocabulary of {} tokens, more than the {vocab_size} asked: WordPiece \
             keeps the special tokens and every character of the corpus (up to {}), as HF's \
             trainer does, before it merges any",
            store::describe(files),
            tok.vocab_size(),
            how.limit_alphabet
        );
    }
    Ok(tok)
}

/// Warns of held-out files that are also training files: evaluation then measures how well the
/// training text is fit (what a memorisation check wants, so it is not refused). `valid`'s store
/// manifest lists the files it was read from.
fn warn_if_overlapping(train_files: &[PathBuf], valid: &RowSet) {
    let real = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
    let trained: Vec<PathBuf> = train_files.iter().map(real).collect();
    for s in &valid.store.manifest().sources {
        if trained.contains(&real(&s.path)) {
            crate::errln!(
                "note: data.valid file {} is also in data.train, so evaluation scores text the \
                 model trains on, not held-out text",
                s.path.display()
            );
        }
    }
}

/// Train and validation rows of a config, over a tokenizer.
pub struct Datasets {
    pub train: RowSet,
    pub valid: RowSet,
}

/// Where a config's token stores live: `data.cache_dir`, else the user's cache folder.
pub fn cache_dir(cfg: &Config) -> PathBuf {
    if cfg.data.cache_dir.as_os_str().is_empty() {
        store::default_cache_dir()
    } else {
        cfg.data.cache_dir.clone()
    }
}

/// The corpora a config's run reads, as `(what, key, paths)`: `("training", "data.train", …)`,
/// and `data.valid`'s when it names files.
pub fn corpora(cfg: &Config) -> Vec<(&'static str, &'static str, &[PathBuf])> {
    let mut v = vec![("training", "data.train", cfg.data.train.as_slice())];
    if !cfg.data.valid.is_empty() {
        v.push(("validation", "data.valid", cfg.data.valid.as_slice()));
    }
    v
}

/// Refuses, before any work (a tokenizer trained, a corpus read), a token-store folder that
/// cannot be made or written in, unless the stores of `corpora` (`(key, paths)`: `data.train`,
/// `--corpus`) under the tokenizer `tok` gives (read only then) are all current there: a command
/// that only reads them works from a shared, read-only cache. A corpus path that cannot be read
/// is named with its key; a store that would have to be built there is named with the reason.
pub fn check_cache_dir(
    cfg: &Config,
    tok: impl FnOnce() -> Option<BertTokenizer>,
    corpora: &[(&str, &[PathBuf])],
) -> Result<()> {
    let cache = cache_dir(cfg);
    let Err(e) = crate::io::check_output_dir(&cache, "data.cache_dir") else {
        return Ok(());
    };
    let Some(tok) = tok() else {
        return Err(e.into());
    };
    for (key, paths) in corpora {
        let files = corpus::expand_paths(paths).with_context(|| key.to_string())?;
        let (dir, want) = store::locate(&files, &tok, &cfg.data.text_field, &cache)?;
        if let Err(why) = TokenStore::open_if_current(&dir, &want)? {
            crate::usage!(
                "{e}: the token store of {key} there, {}, would have to be built ({why})",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuses, before any work, what [`Datasets::prepare`] would otherwise find only after a
/// tokenizer was trained and a store built: a `data.cache_dir` that cannot be written (unless
/// `tokenizer.path` exists and the stores of the config's corpora under it are current there),
/// a path of `data.train` or `data.valid` that cannot be read or a folder there without corpus
/// files (named with its key).
pub fn check_data(cfg: &Config) -> Result<()> {
    let keyed: Vec<(&str, &[PathBuf])> = corpora(cfg)
        .into_iter()
        .map(|(_, key, paths)| (key, paths))
        .collect();
    let tok = || {
        let path = &cfg.tokenizer.path;
        path.is_file()
            .then(|| BertTokenizer::load(path).ok())
            .flatten()
    };
    check_cache_dir(cfg, tok, &keyed)?;
    for &(key, paths) in &keyed {
        for f in corpus::expand_paths(paths).with_context(|| key.to_string())? {
            // A file that is there but cannot be opened (permissions) would otherwise be found
            // only when its text is read, after a tokenizer was trained.
            std::fs::File::open(&f).map_err(|e| {
                UsageError::new(format!(
                    "{key}: corpus file {} cannot be read: {e}",
                    f.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// The token store of a corpus under a config: opened when current, else (re)built.
pub fn store_for(paths: &[PathBuf], cfg: &Config, tok: &BertTokenizer) -> Result<TokenStore> {
    Ok(store_built(paths, cfg, tok)?.0)
}

/// [`store_for`], and whether this call built the store (`false`: it was current).
pub fn store_built(
    paths: &[PathBuf],
    cfg: &Config,
    tok: &BertTokenizer,
) -> Result<(TokenStore, bool)> {
    let files = corpus::expand_paths(paths)?;
    store::open_or_prepare(&files, tok, &cfg.data.text_field, &cache_dir(cfg))
}

/// The rows of a corpus under a config's packing and seq_len, through its token store.
pub fn rows_from(
    paths: &[PathBuf],
    cfg: &Config,
    tok: &BertTokenizer,
    what: &str,
) -> Result<RowSet> {
    let store = store_for(paths, cfg, tok)?;
    let rows = RowSet::all(Arc::new(store), cfg.data.packing, cfg.data.seq_len);
    if rows.is_empty() {
        return Err(UsageError::new(format!(
            "{what} corpus {} has {} tokens: not enough for one row of data.seq_len {}; add text or lower seq_len",
            store::describe(&corpus::expand_paths(paths)?),
            rows.store.manifest().tokens(),
            cfg.data.seq_len
        ))
        .into());
    }
    Ok(rows)
}

impl Datasets {
    /// BLAKE3 of which tokenized rows train and which validate: each set's corpus content and
    /// row range. A checkpoint records it, so `--resume` after a corpus changed is refused (the
    /// saved stream position would point at other rows) while a moved or touched file is not.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        for set in [&self.train, &self.valid] {
            h.update(set.store.content_id().as_bytes());
            h.update(&set.rows.start.to_le_bytes());
            h.update(&set.rows.end.to_le_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    pub fn prepare(cfg: &Config, tok: &BertTokenizer) -> Result<Datasets> {
        let train = rows_from(&cfg.data.train, cfg, tok, "training")?;
        if !cfg.data.valid.is_empty() {
            let valid = rows_from(&cfg.data.valid, cfg, tok, "validation")?;
            let sources = &train.store.manifest().sources;
            let train_files: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
            warn_if_overlapping(&train_files, &valid);
            return Ok(Datasets { train, valid });
        }
        let n = train.len() as u64;
        let (valid, rest) =
            rows::split_first(n, cfg.data.validation_split_percentage).ok_or_else(|| {
                UsageError::new(format!(
                    "the training corpus gives only {n} row(s) of data.seq_len {}: too few to \
                     hold out validation rows; add text, lower seq_len or set data.valid",
                    cfg.data.seq_len
                ))
            })?;
        Ok(Datasets {
            valid: train.slice(valid),
            train: train.slice(rest),
        })
    }
}

/// The validation rows of a config alone: `data.valid` without reading the training corpus (its
/// file names are compared, for the note on files in both), or, when there is none, the held-out
/// slice of `data.train`.
pub fn validation_rows(cfg: &Config, tok: &BertTokenizer) -> Result<RowSet> {
    if cfg.data.valid.is_empty() {
        return Ok(Datasets::prepare(cfg, tok)?.valid);
    }
    let valid = rows_from(&cfg.data.valid, cfg, tok, "validation")?;
    // The training files are only compared by name here: ones that cannot be read are skipped.
    if let Ok(train_files) = corpus::expand_paths(&cfg.data.train) {
        warn_if_overlapping(&train_files, &valid);
    }
    Ok(valid)
}

/// The training corruption of a config.
pub fn corruption(cfg: &Config, tok: &BertTokenizer) -> Corruption {
    Corruption {
        table: Arc::new(tok.token_table()),
        specials: tok.specials(),
        params: MaskingParams {
            mask_prob: cfg.data.mask_prob,
            mask_token_prob: cfg.data.mask_token_prob,
            random_token_prob: cfg.data.random_token_prob,
            whole_word: cfg.data.whole_word_masking,
        },
        seed: cfg.train.seed,
    }
}

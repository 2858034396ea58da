//! WordPiece tokenizer: trained with HF `tokenizers`, saved as `tokenizer.json` (+ `vocab.txt`)
//! that HF `tokenizers` and `PreTrainedTokenizerFast` load as they are.
//!
//! Special tokens are looked up by name once, here, and never assumed to have fixed ids.

use crate::error::UsageError;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// BERT's special tokens, in the order they get ids 0..5 when masklm trains a tokenizer.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// The continuation prefix of WordPiece sub-words (`play ##ing`).
pub const CONTINUATION_PREFIX: &str = "##";

/// How WordPiece is trained: HF's `BertWordPieceTokenizer.train` arguments, with its defaults
/// (`WordPieceTraining::new`).
#[derive(Debug, Clone, PartialEq)]
pub struct WordPieceTraining {
    /// Vocabulary size asked for, special tokens included.
    pub vocab_size: usize,
    /// Lowercase and strip accents (BERT uncased), or keep both (cased).
    pub lowercase: bool,
    /// Least count of a pair merged (HF's `min_frequency`, 2).
    pub min_frequency: u64,
    /// Most characters kept before merging, the rarest dropped (HF's `limit_alphabet`, 1000).
    pub limit_alphabet: usize,
}

impl WordPieceTraining {
    /// HF's `BertWordPieceTokenizer.train` defaults for the other settings.
    pub fn new(vocab_size: usize, lowercase: bool) -> Self {
        Self {
            vocab_size,
            lowercase,
            min_frequency: 2,
            limit_alphabet: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

impl SpecialIds {
    pub fn all(&self) -> [u32; 5] {
        [self.pad, self.unk, self.cls, self.sep, self.mask]
    }
}

/// transformers' `clean_up_tokenization`, on decoded text: the space before `.`, `?`, `!`, `,`
/// and the English contractions removed, in its order (` ' ` becomes `'`, so that BERT's `do
/// n ' t` reads `don't`). tokenizers' WordPiece decoder has a `cleanup` of its own, but it works
/// token by token, so it never sees ` n't` across the tokens `n`, `'`, `t`.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// A loaded WordPiece tokenizer with its special ids resolved.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    specials: SpecialIds,
    vocab_size: usize,
    /// transformers' `clean_up_tokenization_spaces`, applied by [`BertTokenizer::decode`]; a
    /// setting of the run (`tokenizer.clean_up_tokenization_spaces`), not of tokenizer.json.
    clean_up_tokenization_spaces: bool,
    /// Added tokens shown otherwise than written: [`shown_added_tokens`].
    shown: std::collections::HashMap<u32, String>,
}

/// The added tokens of `tok` that HF shows as its normalizer makes them, by id: tokenizers 0.23
/// (transformers' fill-mask, `convert_ids_to_tokens`, `decode`) gives a normalized added token's
/// normalized form ("New Thing" in a lowercasing tokenizer is "new thing"), special or not, where
/// the 0.22 crate gives it as written. Both match the same text.
fn shown_added_tokens(tok: &Tokenizer) -> std::collections::HashMap<u32, String> {
    use tokenizers::{NormalizedString, Normalizer};
    let Some(normalizer) = tok.get_normalizer() else {
        return Default::default();
    };
    tok.get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.normalized)
        .filter_map(|(id, t)| {
            let mut n = NormalizedString::from(t.content.as_str());
            normalizer.normalize(&mut n).ok()?;
            (n.get() != t.content).then(|| (id, n.get().to_string()))
        })
        .collect()
}

impl BertTokenizer {
    /// Trains WordPiece on `lines` as HF's `BertWordPieceTokenizer` does: BERT normalizer
    /// (lowercasing and accent stripping unless `cased`), BERT pre-tokenizer, `##` continuations,
    /// `[CLS] $A [SEP]` post-processor.
    pub fn train<I, S>(lines: I, how: &WordPieceTraining) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let wordpiece = WordPiece::builder()
            .unk_token("[UNK]".into())
            .continuing_subword_prefix(CONTINUATION_PREFIX.into())
            .build()
            .map_err(|e| anyhow::anyhow!("building WordPiece model: {e}"))?;
        let mut tok = Tokenizer::new(wordpiece);
        // strip_accents None follows `lowercase`, as in BERT uncased / cased.
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, how.lowercase)));
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_decoder(Some(WordPieceDecoder::new(
            CONTINUATION_PREFIX.into(),
            true,
        )));
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        let mut trainer = TrainerWrapper::WordPieceTrainer(
            WordPieceTrainer::builder()
                .vocab_size(how.vocab_size)
                .min_frequency(how.min_frequency)
                .limit_alphabet(how.limit_alphabet)
                .special_tokens(specials)
                .continuing_subword_prefix(CONTINUATION_PREFIX.into())
                .show_progress(false)
                .build(),
        );
        tok.train(&mut trainer, lines)
            .map_err(|e| anyhow::anyhow!("training the WordPiece tokenizer: {e}"))?;
        let cls = tok
            .token_to_id("[CLS]")
            .context("trained vocabulary lacks [CLS]")?;
        let sep = tok
            .token_to_id("[SEP]")
            .context("trained vocabulary lacks [SEP]")?;
        tok.with_post_processor(Some(bert_post_processor(cls, sep)?));
        Self::from_tokenizer(tok, "the trained tokenizer")
    }

    /// Loads a `tokenizer.json`; refuses one without BERT's special tokens.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            let what = if path.is_dir() {
                "is a folder, not a file"
            } else if path.exists() {
                "is not a regular file (a device, FIFO or socket)"
            } else {
                "does not exist"
            };
            return Err(UsageError::new(format!(
                "tokenizer file {} {what}; give a tokenizer.json written by `masklm tokenizer` or HF",
                path.display()
            ))
            .into());
        }
        let json = crate::io::read_to_string_capped(path, crate::io::MAX_TOKENIZER_BYTES).map_err(
            |e| {
                UsageError::new(format!(
                    "cannot read tokenizer file {}: {e}; give a tokenizer.json written by \
                     `masklm tokenizer` or HF",
                    path.display()
                ))
            },
        )?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// Parses the text of a `tokenizer.json`; `name` says where it came from in messages.
    pub fn from_json(json: &str, name: &str) -> Result<Self> {
        let tok: Tokenizer = json.parse().map_err(|e| {
            // A vocab.txt (one token a line) starts like a JSON list: serde's "invalid type:
            // sequence" would not say what is wrong.
            let hint = match json.trim_start().starts_with('{') {
                true => String::new(),
                false => "; it is not a JSON object, as a tokenizer.json is (a vocab.txt of an \
                          HF folder comes in through `masklm import --hf FOLDER`)"
                    .into(),
            };
            UsageError::new(format!("{name} is not a valid tokenizer.json: {e}{hint}"))
        })?;
        Self::from_tokenizer(tok, name)
    }

    fn from_tokenizer(mut inner: Tokenizer, name: &str) -> Result<Self> {
        // A downloaded tokenizer.json may pad or truncate every encoding (sentence-transformers
        // ship them so): corpus lines would get [PAD] ids inside packed rows, or lose their ends.
        // masklm builds its rows itself.
        inner
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("turning off the truncation of {name}: {e}"))?;
        inner.with_padding(None);
        // A special token that is only a vocabulary entry would be split like text ("[MASK]" →
        // "[", "mask", "]"): made special at its id, as transformers adds a tokenizer's special
        // tokens.
        let special: Vec<String> = inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content)
            .collect();
        let unmarked: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| inner.token_to_id(t).is_some() && !special.iter().any(|s| s == *t))
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(&unmarked);
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| {
                UsageError::new(format!(
                    "tokenizer {name} has no {t} token; masklm needs BERT's special tokens by \
                     these names, {} (another model's, such as RoBERTa's <mask>, are not BERT's \
                     WordPiece tokenizer); `masklm tokenizer` trains one",
                    SPECIAL_TOKENS.join(" ")
                ))
            })
        };
        let specials = SpecialIds {
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
        };
        // Ids may have holes in hand-made files: the embedding needs max id + 1 rows.
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        if vocab_size > crate::config::MAX_VOCAB_SIZE {
            crate::usage!(
                "tokenizer {name} has a token of id {}; masklm accepts ids below {} (the \
                 embedding has a row for every id up to the largest)",
                vocab_size - 1,
                crate::config::MAX_VOCAB_SIZE
            );
        }
        Ok(Self {
            shown: shown_added_tokens(&inner),
            inner,
            specials,
            vocab_size,
            clean_up_tokenization_spaces: false,
        })
    }

    /// Refuses, before a tokenizer is trained, a `path` that [`save`](Self::save) could not
    /// write or would clobber: a folder, a path under a file, or a file named `vocab.txt` (the
    /// word list written beside the tokenizer would replace it). `what` names the option.
    pub fn check_save_path(
        path: &Path,
        what: &str,
        corpus: &[PathBuf],
    ) -> Result<(), crate::error::UsageError> {
        let fail = |why: String| {
            Err(crate::error::UsageError::new(format!(
                "{what} {}: {why}",
                path.display()
            )))
        };
        crate::io::check_output_file(path, what, "tokenizer.json")?;
        if path.file_name() == Some("vocab.txt".as_ref()) {
            return fail(
                "vocab.txt is the word list written beside the tokenizer, which would replace it; \
                 name the tokenizer file tokenizer.json"
                    .into(),
            );
        }
        let vocab = path.with_file_name("vocab.txt");
        if vocab.is_dir() {
            return fail(format!(
                "{} is a folder, where the word list written beside the tokenizer goes; move it \
                 away or write the tokenizer elsewhere",
                vocab.display()
            ));
        }
        if vocab.metadata().is_ok_and(|m| !m.is_file()) {
            return fail(format!(
                "{} is not a regular file (a device, FIFO or socket), where the word list written \
                 beside the tokenizer goes; write the tokenizer elsewhere",
                vocab.display()
            ));
        }
        // A folder's corpus files are every .txt below it: vocab.txt there would become text.
        if let Some(folder) = crate::data::corpus::folder_holding(corpus, &vocab) {
            return fail(format!(
                "its word list {} would be inside the corpus folder {}, and read as text by every \
                 later run on that folder; write the tokenizer outside it",
                vocab.display(),
                folder.display()
            ));
        }
        Ok(())
    }

    /// Writes `path` (tokenizer.json) and `vocab.txt` beside it, each atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_json()?;
        // vocab.txt first: tokenizer.json is the file runs look for and trust, so a new one
        // appears only once its companion is written (a first save killed in between leaves no
        // tokenizer.json, and the next run writes both; a `--force` over an older pair can
        // still leave the new vocab.txt beside the old tokenizer.json, which is what is read).
        let vocab_path = path.with_file_name("vocab.txt");
        // A failed write (a full disk) takes back what this save wrote: a vocab.txt left alone
        // would make the retry's "exists; pass --force" refusal, or pair with another tokenizer.
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
        let made = match parent {
            Some(dir) => crate::io::make_dirs(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?,
            None => Vec::new(),
        };
        // Two processes saving here at once write their pairs one after the other (an advisory
        // lock on the folder): the last pair stands whole, never one's vocab.txt beside the
        // other's tokenizer.json.
        let parent = parent.unwrap_or(Path::new("."));
        let _lock = std::fs::File::open(parent)
            .and_then(|f| f.lock().map(|()| f))
            .with_context(|| format!("locking {}", parent.display()))?;
        // What stood there before: its bytes, or None where there was nothing (one that cannot be
        // read is left as the failed write finds it).
        let before = match std::fs::read(&vocab_path) {
            Ok(bytes) => Some(Some(bytes)),
            Err(_) if vocab_path.symlink_metadata().is_err() => Some(None),
            Err(_) => None,
        };
        let result = crate::io::write_atomic(&vocab_path, self.vocab_txt().as_bytes());
        let result = match result {
            Ok(()) => crate::io::write_atomic(path, json.as_bytes()).inspect_err(|_| {
                let _ = match &before {
                    Some(Some(old)) => crate::io::write_atomic(&vocab_path, old),
                    Some(None) => std::fs::remove_file(&vocab_path).map_err(Into::into),
                    None => Ok(()),
                };
            }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            crate::io::remove_made(&made);
        }
        result
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("serializing tokenizer: {e}"))
    }

    /// One token per line, line number = id (BERT's vocab.txt).
    pub fn vocab_txt(&self) -> String {
        let mut out = String::new();
        for id in 0..self.vocab_size as u32 {
            // A hole in the ids gets [unusedN], as in Google's vocab files.
            match self.inner.id_to_token(id) {
                Some(t) => out.push_str(&t),
                None => out.push_str(&format!("[unused{id}]")),
            }
            out.push('\n');
        }
        out
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The token of `id` as HF shows it (an added token normalized: [`shown_added_tokens`]).
    pub fn token(&self, id: u32) -> String {
        self.shown
            .get(&id)
            .cloned()
            .or_else(|| self.inner.id_to_token(id))
            .unwrap_or_else(|| format!("[unused{id}]"))
    }

    /// The id of `token` in the vocabulary, added tokens included (HF's `get_vocab()`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids without `[CLS]`/`[SEP]`, texts encoded in parallel.
    pub fn encode_batch(&self, texts: Vec<&str>) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch_fast(texts, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Token ids of one text with `[CLS]` … `[SEP]`, as HF `tokenizer(text)` gives them.
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(e.get_ids().to_vec())
    }

    /// Token ids of one text without specials, each with the byte range of `text` it came from.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, std::ops::Range<usize>)>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(e.get_ids()
            .iter()
            .zip(e.get_offsets())
            .map(|(&id, &(a, b))| (id, a..b))
            .collect())
    }

    /// `ids` as text, as HF's `tokenizer.decode(ids, skip_special_tokens=…)` gives it: `##`
    /// pieces joined by the WordPiece decoder, then, with `clean_up_tokenization_spaces`,
    /// [`clean_up_tokenization`] over the whole text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = match self.shown.is_empty() {
            true => self.inner.decode(ids, skip_special_tokens),
            // tokenizers' `decode` with the added tokens as HF shows them; a special token shown
            // otherwise than written is no longer found special, so HF keeps it (tokenizers 0.23
            // decodes "<Keep>", special and normalized, as "<keep>" with skip_special_tokens).
            false => {
                let special: std::collections::HashSet<u32> = self
                    .inner
                    .get_added_tokens_decoder()
                    .into_iter()
                    .filter_map(|(id, t)| t.special.then_some(id))
                    .collect();
                let tokens: Vec<String> = ids
                    .iter()
                    .filter(|id| {
                        !(skip_special_tokens
                            && special.contains(id)
                            && !self.shown.contains_key(id))
                    })
                    .filter(|&&id| {
                        self.shown.contains_key(&id) || self.inner.id_to_token(id).is_some()
                    })
                    .map(|&id| self.token(id))
                    .collect();
                match self.inner.get_decoder() {
                    Some(d) => tokenizers::Decoder::decode(d, tokens),
                    None => Ok(tokens.join(" ")),
                }
            }
        }
        .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
        Ok(match self.clean_up_tokenization_spaces {
            true => clean_up_tokenization(&text),
            false => text,
        })
    }

    /// This tokenizer with transformers' `clean_up_tokenization_spaces` set to `on`.
    pub fn with_clean_up_tokenization_spaces(mut self, on: bool) -> Self {
        self.clean_up_tokenization_spaces = on;
        self
    }

    pub fn clean_up_tokenization_spaces(&self) -> bool {
        self.clean_up_tokenization_spaces
    }

    /// How many tokens (added ones included) are not special: none for a vocabulary of the
    /// special tokens alone, which makes every word [UNK].
    pub fn non_special_tokens(&self) -> usize {
        let special: std::collections::HashSet<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter_map(|(id, t)| t.special.then_some(id))
            .chain(self.specials.all())
            .collect();
        self.inner
            .get_vocab(true)
            .values()
            .filter(|id| !special.contains(id))
            .count()
    }

    /// What masking needs to know of each id, by id.
    pub fn token_table(&self) -> crate::data::masking::TokenTable {
        let mut special = vec![false; self.vocab_size];
        for id in self.specials.all() {
            special[id as usize] = true;
        }
        // Every other added special token ([unusedN] etc.) is special too, as in HF's
        // `all_special_ids`.
        for (id, tok) in self.inner.get_added_tokens_decoder() {
            if tok.special && (id as usize) < self.vocab_size {
                special[id as usize] = true;
            }
        }
        let continuation = (0..self.vocab_size as u32)
            .map(|id| {
                self.inner
                    .id_to_token(id)
                    .is_some_and(|t| t.starts_with(CONTINUATION_PREFIX))
            })
            .collect();
        crate::data::masking::TokenTable::new(special, continuation, self.specials.mask)
    }

    /// A digest of the tokenizer's full definition (cache keys, checkpoint checks).
    pub fn fingerprint(&self) -> Result<String> {
        Ok(blake3::hash(
            self.inner
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .as_bytes(),
        )
        .to_hex()
        .to_string())
    }
}

/// BERT's post-processor: `[CLS] A [SEP]` (and `[CLS] A [SEP] B [SEP]` with type ids 0/1 for
/// pairs), as HF's `BertProcessing` / `TemplateProcessing` for BERT writes it.
pub fn bert_post_processor(cls: u32, sep: u32) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .map_err(|e| anyhow::anyhow!("post-processor template: {e}"))?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| anyhow::anyhow!("building the post-processor: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_tokenization_joins_contractions_as_transformers_does() {
        // transformers 5.25's decode of BERT's tokens for "it's a cat don't, can't." with
        // clean_up_tokenization_spaces=True, from the WordPiece decoder's text.
        assert_eq!(
            clean_up_tokenization("it ' s a cat do n ' t, ca n ' t ."),
            "it's a cat don't, can't."
        );
        assert_eq!(
            clean_up_tokenization("what ? no ! they 're , we 've , i 'm"),
            "what? no! they're, we've, i'm"
        );
    }

    #[test]
    fn a_normalized_added_token_shows_as_hf_shows_it() {
        // Python tokenizers 0.23.3 on a BERT normalizer (lowercase) with these added tokens:
        // id_to_token gives 'new thing', ' 中  文 ', 'uni', '<Keep>' (special, not normalized)
        // and '<sp>' (special, normalized: shown lowercased, and then kept by decode's
        // skip_special_tokens); decode of the first three ids gives 'new thing  中  文  uni'
        // (WordPiece's decoder joins with spaces).
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/tokenizer.json");
        let mut tok = BertTokenizer::load(&path).unwrap();
        let n = tok.vocab_size() as u32;
        let added = ["New Thing", "中文", "Ünï"].map(|t| AddedToken::from(t, false));
        tok.inner.add_tokens(&added);
        tok.inner.add_special_tokens(&[
            AddedToken::from("<Keep>", true),
            AddedToken::from("<SP>", true).normalized(true),
        ]);
        let tok = BertTokenizer::from_json(&tok.to_json().unwrap(), "t").unwrap();
        let shown: Vec<String> = (n..n + 5).map(|id| tok.token(id)).collect();
        assert_eq!(shown, ["new thing", " 中  文 ", "uni", "<Keep>", "<sp>"]);
        assert_eq!(
            tok.decode(&[n, n + 1, n + 2], false).unwrap(),
            "new thing  中  文  uni"
        );
        assert_eq!(
            tok.decode(&[n, n + 3, n + 4], true).unwrap(),
            "new thing <sp>"
        );
        assert_eq!(tok.encode_batch(vec!["New THING"]).unwrap(), [[n]]);
    }
}

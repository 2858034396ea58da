//! The tokenizer files of an HF folder: `tokenizer.json` (the full definition, what masklm uses),
//! `vocab.txt` (for the slow `BertTokenizer` and old tools), `tokenizer_config.json` (which class
//! `AutoTokenizer` builds, with which flags) and `special_tokens_map.json`.

use crate::error::UsageError;
use crate::tokenizer::{BertTokenizer, CONTINUATION_PREFIX};
use anyhow::Result;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

/// HF's attribute name of each special token, as in `special_tokens_map.json`.
const SPECIAL_ATTRS: [(&str, &str); 5] = [
    ("pad_token", "[PAD]"),
    ("unk_token", "[UNK]"),
    ("cls_token", "[CLS]"),
    ("sep_token", "[SEP]"),
    ("mask_token", "[MASK]"),
];

/// The BERT normalizer's settings in a tokenizer.json, when its normalizer is BERT's.
fn bert_normalizer(tokenizer_json: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(tokenizer_json).ok()?;
    let n = v.get("normalizer")?;
    (n.get("type")? == "BertNormalizer").then(|| n.clone())
}

/// Whether the tokenizer lowercases (BERT uncased); true when it cannot tell, as HF's default.
pub fn lowercases(tokenizer_json: &str) -> bool {
    bert_normalizer(tokenizer_json)
        .and_then(|n| n.get("lowercase")?.as_bool())
        .unwrap_or(true)
}

/// `(name, contents)` of the four tokenizer files of an export.
///
/// With a BERT normalizer the class is `BertTokenizer` (transformers 5's fast BERT tokenizer,
/// which transformers 4 maps to `BertTokenizerFast`), and its flags repeat the normalizer's,
/// since transformers 5 rebuilds the pipeline from them. Any other normalizer gets the generic
/// `PreTrainedTokenizerFast`, which uses tokenizer.json as it is.
pub fn hf_files(tok: &BertTokenizer, max_len: usize) -> Result<Vec<(&'static str, String)>> {
    let tokenizer_json = tok.to_json()?;
    let specials: serde_json::Map<String, Value> = SPECIAL_ATTRS
        .iter()
        .map(|(attr, t)| (attr.to_string(), json!(t)))
        .collect();
    let mut config = json!({"model_max_length": max_len});
    match bert_normalizer(&tokenizer_json) {
        Some(n) => {
            config["tokenizer_class"] = json!("BertTokenizer");
            config["do_lower_case"] = n["lowercase"].clone();
            config["strip_accents"] = n["strip_accents"].clone();
            config["tokenize_chinese_chars"] = n["handle_chinese_chars"].clone();
        }
        None => config["tokenizer_class"] = json!("PreTrainedTokenizerFast"),
    }
    for (k, v) in &specials {
        config[k] = v.clone();
    }
    Ok(vec![
        ("tokenizer.json", tokenizer_json),
        // vocab_txt ends with a newline; the caller adds one to every file.
        (
            "vocab.txt",
            tok.vocab_txt().trim_end_matches('\n').to_string(),
        ),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&config)?,
        ),
        (
            "special_tokens_map.json",
            serde_json::to_string_pretty(&Value::Object(specials))?,
        ),
    ])
}

/// `tokenizer_class` values (tokenizer_config.json) that are BERT's WordPiece tokenizer, built
/// from tokenizer_config.json's flags by transformers 4 and 5 alike.
const BERT_CLASSES: [&str; 8] = [
    "BertTokenizer",
    "BertTokenizerFast",
    "DistilBertTokenizer",
    "DistilBertTokenizerFast",
    "ElectraTokenizer",
    "ElectraTokenizerFast",
    "MobileBertTokenizer",
    "MobileBertTokenizerFast",
];

/// `tokenizer_class` values that use tokenizer.json as it is (transformers 4's and 5's names).
const AS_IS_CLASSES: [&str; 2] = ["PreTrainedTokenizerFast", "TokenizersBackend"];

/// The tokenizer.json text of an HF folder and the file it came from, as transformers'
/// `AutoTokenizer` builds the tokenizer of a BERT model: tokenizer.json with its BERT normalizer
/// set to tokenizer_config.json's flags (their defaults when absent; transformers rebuilds the
/// normalizer from them), else one built from vocab.txt and those flags. A `tokenizer_class` that
/// is not BERT's WordPiece (`BertJapaneseTokenizer`'s MeCab splitting) is refused.
pub fn read_hf(hf_dir: &Path) -> Result<(String, PathBuf)> {
    let config_path = hf_dir.join("tokenizer_config.json");
    let (class, flags) = read_flags(&config_path)?;
    let as_is = class.as_deref().is_some_and(|c| AS_IS_CLASSES.contains(&c));
    if let Some(c) = class
        .as_deref()
        .filter(|c| !as_is && !BERT_CLASSES.contains(c))
    {
        crate::usage!(
            "{} names tokenizer_class {c:?}, which masklm cannot reproduce: it reads BERT's \
             WordPiece tokenizer ({}) or a tokenizer.json used as it is ({}), and training or \
             scoring with another tokenizer than the model's would go wrong without an error",
            config_path.display(),
            BERT_CLASSES.join(", "),
            AS_IS_CLASSES.join(", ")
        );
    }
    let json_path = hf_dir.join("tokenizer.json");
    if json_path.is_file() {
        let text = crate::io::read_to_string_capped(&json_path, crate::io::MAX_TOKENIZER_BYTES)
            .map_err(|e| {
                UsageError::new(format!(
                    "cannot read {}: {e}; copy the model's own tokenizer files (save_pretrained \
                     writes them) into the folder",
                    json_path.display()
                ))
            })?;
        if as_is {
            return Ok((text, json_path));
        }
        let (text, changed) = with_flags(&text, &flags);
        if let Some(changed) = changed {
            let source = if config_path.is_file() {
                format!("{} sets", config_path.display())
            } else {
                "without a tokenizer_config.json, transformers takes the defaults".into()
            };
            eprintln!(
                "note: {}'s normalizer says {changed}, but {source} {}, which transformers \
                 applies over it: masklm does too",
                json_path.display(),
                flags.describe()
            );
        }
        return Ok((text, json_path));
    }
    let vocab = hf_dir.join("vocab.txt");
    if !vocab.is_file() {
        crate::usage!(
            "{} has neither tokenizer.json nor vocab.txt; copy the model's tokenizer files into it",
            hf_dir.display()
        );
    }
    if as_is {
        crate::usage!(
            "{} names tokenizer_class {:?}, which is defined by a tokenizer.json, and {} has none; \
             copy the model's tokenizer.json into it",
            config_path.display(),
            class.unwrap_or_default(),
            hf_dir.display()
        );
    }
    let tok = from_vocab_txt(&vocab, &flags)?;
    let text = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serializing the tokenizer built from vocab.txt: {e}"))?;
    Ok((text, vocab))
}

/// tokenizer_config.json's BERT flags; HF's defaults when the file is absent.
#[derive(Debug, Clone, PartialEq)]
struct Flags {
    lowercase: bool,
    /// None: follow `lowercase`, as BERT does.
    strip_accents: Option<bool>,
    chinese_chars: bool,
}

impl Flags {
    /// As tokenizer_config.json spells them.
    fn describe(&self) -> String {
        let accents = self.strip_accents.map_or("null".into(), |b| b.to_string());
        format!(
            "do_lower_case {}, strip_accents {accents}, tokenize_chinese_chars {}",
            self.lowercase, self.chinese_chars
        )
    }
}

/// tokenizer_config.json's `tokenizer_class` (None when absent: the model type's, BERT's) and
/// BERT flags; HF's defaults when the file is absent.
fn read_flags(path: &Path) -> Result<(Option<String>, Flags)> {
    let mut flags = Flags {
        lowercase: true,
        strip_accents: None,
        chinese_chars: true,
    };
    if !path.is_file() {
        return Ok((None, flags));
    }
    let text = crate::io::read_to_string_capped(path, crate::io::MAX_SETTINGS_BYTES)
        .map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError::new(format!("{} is not valid JSON: {e}", path.display())))?;
    let flag = |key: &str| v.get(key).and_then(Value::as_bool);
    flags.lowercase = flag("do_lower_case").unwrap_or(true);
    flags.strip_accents = flag("strip_accents");
    flags.chinese_chars = flag("tokenize_chinese_chars").unwrap_or(true);
    let class = v.get("tokenizer_class").and_then(Value::as_str);
    Ok((class.map(str::to_string), flags))
}

/// `tokenizer_json` with a BERT normalizer's settings set to `flags`, and what they said before
/// when that changed them (None: unchanged, or not a BERT normalizer, which is kept as it is).
fn with_flags(tokenizer_json: &str, flags: &Flags) -> (String, Option<String>) {
    let unchanged = (tokenizer_json.to_string(), None);
    let Some(before) = bert_normalizer(tokenizer_json) else {
        return unchanged;
    };
    let want = [
        ("lowercase", json!(flags.lowercase)),
        ("strip_accents", json!(flags.strip_accents)),
        ("handle_chinese_chars", json!(flags.chinese_chars)),
    ];
    let differ: Vec<String> = want
        .iter()
        .filter(|(k, v)| before.get(*k).unwrap_or(&Value::Null) != v)
        .map(|(k, _)| format!("{k} {}", before.get(*k).unwrap_or(&Value::Null)))
        .collect();
    if differ.is_empty() {
        return unchanged;
    }
    let mut v: Value = serde_json::from_str(tokenizer_json).expect("parsed by bert_normalizer");
    for (k, value) in want {
        v["normalizer"][k] = value;
    }
    (v.to_string(), Some(differ.join(", ")))
}

/// HF's `BertConverter`: WordPiece over vocab.txt (line number = id), BERT normalizer and
/// pre-tokenizer, `[CLS] $A [SEP]` post-processor, the five special tokens added as special.
fn from_vocab_txt(vocab: &Path, f: &Flags) -> Result<Tokenizer> {
    let name = vocab.display().to_string();
    // `tokenizers` reads vocab.txt line by line into memory: refuse a huge file first.
    crate::io::ensure_at_most(vocab, crate::io::MAX_TOKENIZER_BYTES).map_err(|e| {
        UsageError::new(format!(
            "cannot read {name}: {e}; copy the model's own vocab.txt (save_pretrained writes \
             it) into the folder"
        ))
    })?;
    let wordpiece = WordPiece::from_file(&name)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix(CONTINUATION_PREFIX.into())
        .build()
        .map_err(|e| UsageError::new(format!("cannot read {name} as a WordPiece vocab: {e}")))?;
    let mut tok = Tokenizer::new(wordpiece);
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        f.chinese_chars,
        f.strip_accents,
        f.lowercase,
    )));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::new(
        CONTINUATION_PREFIX.into(),
        true,
    )));
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            UsageError::new(format!(
                "{name} has no {t} line; a BERT vocab.txt lists [PAD] [UNK] [CLS] [SEP] [MASK]"
            ))
        })
    };
    // Every special token must be a line: `add_special_tokens` below would append a missing
    // one past the ids config.json's vocab_size counts.
    for (_, t) in SPECIAL_ATTRS {
        id(t)?;
    }
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_post_processor(Some(crate::tokenizer::bert_post_processor(cls, sep)?));
    let specials: Vec<AddedToken> = SPECIAL_ATTRS
        .iter()
        .map(|(_, t)| AddedToken::from(t.to_string(), true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_default_to_bert_uncased() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer_config.json");
        let (class, f) = read_flags(&p).unwrap();
        assert!(class.is_none() && f.lowercase && f.chinese_chars && f.strip_accents.is_none());
        std::fs::write(&p, r#"{"do_lower_case": false, "strip_accents": true}"#).unwrap();
        let (_, f) = read_flags(&p).unwrap();
        assert!(!f.lowercase && f.strip_accents == Some(true));
    }

    #[test]
    fn vocab_txt_builds_bert_wordpiece_with_specials_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vocab.txt"),
            "[PAD]\n[unused0]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n##s\n.\n",
        )
        .unwrap();
        let (json, from) = read_hf(dir.path()).unwrap();
        assert_eq!(from, dir.path().join("vocab.txt"));
        let tok = BertTokenizer::from_json(&json, "t").unwrap();
        assert_eq!(tok.specials().unk, 2);
        assert_eq!(tok.specials().mask, 5);
        assert_eq!(tok.vocab_size(), 10);
        // Lowercased, split into word pieces, unknown words → [UNK], wrapped in [CLS] … [SEP].
        assert_eq!(
            tok.encode_with_specials("The Cats dog [MASK].").unwrap(),
            vec![3, 6, 7, 8, 2, 5, 9, 4]
        );
        assert!(lowercases(&json));
    }

    /// The tokenizer.json that an HF folder holding only `vocab` as vocab.txt gives.
    fn tokenizer_json_of(vocab: &str) -> Value {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
        let (json, _) = read_hf(dir.path()).unwrap();
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn a_tokenizer_json_that_pads_or_truncates_is_read_with_both_off() {
        let mut v = tokenizer_json_of("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n");
        // As sentence-transformers ship them: every encoding cut to 4 ids or padded to 16.
        v["truncation"] =
            json!({"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0});
        v["padding"] = json!({
            "strategy": {"Fixed": 16},
            "direction": "Right",
            "pad_to_multiple_of": null,
            "pad_id": 0,
            "pad_type_id": 0,
            "pad_token": "[PAD]"
        });
        let tok = BertTokenizer::from_json(&v.to_string(), "t").unwrap();
        let ids = tok
            .encode_batch(vec!["the cat the cat the cat", "cat"])
            .unwrap();
        assert_eq!(ids, [vec![5, 6, 5, 6, 5, 6], vec![6]]);
    }

    #[test]
    fn tokenizer_config_flags_override_the_tokenizer_json_normalizer_as_transformers_does() {
        let dir = tempfile::tempdir().unwrap();
        let uncased =
            tokenizer_json_of("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nThe\n").to_string();
        std::fs::write(dir.path().join("tokenizer.json"), &uncased).unwrap();
        let config = dir.path().join("tokenizer_config.json");
        let ids = |json: &str| {
            let tok = BertTokenizer::from_json(json, "t").unwrap();
            tok.encode_with_specials("The").unwrap()
        };
        // Flags that agree: the file as it is, byte for byte.
        std::fs::write(&config, r#"{"tokenizer_class": "BertTokenizer"}"#).unwrap();
        assert_eq!(read_hf(dir.path()).unwrap().0, uncased);
        assert_eq!(ids(&uncased), [2, 5, 3]);
        // A cased model's flags over an uncased normalizer: cased, as transformers reads it.
        std::fs::write(&config, r#"{"do_lower_case": false}"#).unwrap();
        let (cased, _) = read_hf(dir.path()).unwrap();
        assert!(!lowercases(&cased));
        assert_eq!(ids(&cased), [2, 6, 3]);
        // The generic class uses tokenizer.json as it is.
        let generic = r#"{"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": false}"#;
        std::fs::write(&config, generic).unwrap();
        assert_eq!(read_hf(dir.path()).unwrap().0, uncased);
        // ... so without one it cannot be built from vocab.txt.
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        std::fs::write(
            dir.path().join("vocab.txt"),
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n",
        )
        .unwrap();
        let e = format!("{:#}", read_hf(dir.path()).unwrap_err());
        assert!(
            e.contains("PreTrainedTokenizerFast") && e.contains("tokenizer.json"),
            "{e}"
        );
        // A tokenizer that splits text otherwise (MeCab) is refused by name.
        let japanese =
            r#"{"tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": "mecab"}"#;
        std::fs::write(&config, japanese).unwrap();
        let e = read_hf(dir.path()).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
        assert!(
            format!("{e:#}").contains("\"BertJapaneseTokenizer\""),
            "{e:#}"
        );
    }

    #[test]
    fn a_token_id_far_past_the_vocabulary_is_refused() {
        let mut v = tokenizer_json_of("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n");
        v["model"]["vocab"]["cat"] = json!(u32::MAX);
        let Err(e) = BertTokenizer::from_json(&v.to_string(), "t") else {
            panic!("a token id of 2^32 - 1 was accepted");
        };
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("id 4294967295"), "{e:#}");
    }

    #[test]
    fn a_vocab_txt_lacking_a_special_token_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\n").unwrap();
        let e = read_hf(dir.path()).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
        let msg = format!("{e:#}");
        assert!(msg.contains("vocab.txt has no [MASK] line"), "{msg}");
    }
}

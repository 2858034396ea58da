//! The tokenizer files of an HF folder: `tokenizer.json` (the full definition, what masklm uses),
//! `vocab.txt` (for the slow `BertTokenizer` and old tools), `tokenizer_config.json` (which class
//! `AutoTokenizer` builds, with which flags) and `special_tokens_map.json`.

use crate::error::UsageError;
use crate::tokenizer::{BertTokenizer, CONTINUATION_PREFIX};
use anyhow::Result;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, ModelWrapper, Tokenizer};

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
/// A tokenizer that is BERT's whole (normalizer, pre-tokenizer, WordPiece settings, decoder and
/// post-processor, as masklm trains them) gets the class `BertTokenizer` (transformers 5's fast
/// BERT tokenizer, which transformers 4 maps to `BertTokenizerFast`), its flags repeating the
/// normalizer's, since transformers 5 rebuilds the pipeline from them. Any other (an import used
/// as it is) gets the generic `PreTrainedTokenizerFast`, which uses tokenizer.json as it is.
pub fn hf_files(tok: &BertTokenizer, max_len: usize) -> Result<Vec<(&'static str, String)>> {
    let tokenizer_json = tok.to_json()?;
    let specials: serde_json::Map<String, Value> = SPECIAL_ATTRS
        .iter()
        .map(|(attr, t)| (attr.to_string(), json!(t)))
        .collect();
    let mut config = json!({
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces(),
    });
    match bert_normalizer(&tokenizer_json).filter(|n| is_bert_whole(&tokenizer_json, n)) {
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
    // Special added tokens besides BERT's five (an import's [E1], say), as transformers 5 saves
    // them: without the list, its `all_special_ids` would leave them out, and its collator
    // would mask them.
    let added: Value = serde_json::from_str(&tokenizer_json)?;
    let mut extra: Vec<(u64, &str)> = added["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["special"] == json!(true))
        .filter_map(|t| Some((t["id"].as_u64()?, t["content"].as_str()?)))
        .filter(|(_, c)| !crate::tokenizer::SPECIAL_TOKENS.contains(c))
        .collect();
    extra.sort();
    if !extra.is_empty() {
        let tokens: Vec<&str> = extra.into_iter().map(|(_, c)| c).collect();
        config["extra_special_tokens"] = json!(tokens);
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

/// Whether transformers 5's `BertTokenizer`, given the flags of the BERT normalizer `n`, would
/// build `tokenizer_json` as it is.
fn is_bert_whole(tokenizer_json: &str, n: &Value) -> bool {
    let flags = Flags {
        lowercase: n["lowercase"].as_bool().unwrap_or(true),
        strip_accents: n["strip_accents"].as_bool(),
        chinese_chars: n["handle_chinese_chars"].as_bool().unwrap_or(true),
    };
    as_bert_json(tokenizer_json, &flags, "tokenizer.json")
        .is_ok_and(|(_, said, replaced)| said.is_none() && replaced.is_empty())
}

/// `tokenizer_class` values (tokenizer_config.json) that are BERT's WordPiece tokenizer, built
/// from tokenizer_config.json's flags by transformers 4 and 5 alike.
const BERT_CLASSES: [&str; 9] = [
    "BertTokenizer",
    "BertTokenizerFast",
    // What transformers 5 writes when it saves its Python BERT tokenizer (see `check_legacy`).
    "BertTokenizerLegacy",
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
pub fn read_hf(hf_dir: &Path) -> Result<HfTokenizer> {
    let config_path = hf_dir.join("tokenizer_config.json");
    let settings = read_flags(&config_path)?;
    check_special_names(&settings.config, &config_path, hf_dir)?;
    let (json, source) = read_hf_json(hf_dir, &config_path, &settings)?;
    Ok(HfTokenizer {
        json,
        source,
        clean_up_tokenization_spaces: settings.clean_up,
    })
}

/// An HF folder's tokenizer as masklm keeps it.
#[derive(Debug)]
pub struct HfTokenizer {
    /// The tokenizer.json text.
    pub json: String,
    /// The file it came from: tokenizer.json or vocab.txt.
    pub source: PathBuf,
    /// tokenizer_config.json's `clean_up_tokenization_spaces` (transformers 5's default,
    /// false, where absent).
    pub clean_up_tokenization_spaces: bool,
}

/// [`read_hf`]'s tokenizer.json text and the file it came from, given tokenizer_config.json's
/// settings.
fn read_hf_json(
    hf_dir: &Path,
    config_path: &Path,
    settings: &Settings,
) -> Result<(String, PathBuf)> {
    let (class, flags) = (settings.class.clone(), &settings.flags);
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
    if class.as_deref() == Some("BertTokenizerLegacy") {
        check_legacy(&settings.config, config_path, flags)?;
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
        let name = json_path.display().to_string();
        if as_is {
            return Ok((with_folder_tokens(text, hf_dir, &name)?, json_path));
        }
        let (rebuilt, flags_said, replaced) = as_bert_json(&text, flags, &name)?;
        let text = with_folder_tokens(rebuilt, hf_dir, &name)?;
        let source = if config_path.is_file() {
            format!("{} sets", config_path.display())
        } else {
            "without a tokenizer_config.json, transformers takes the defaults".into()
        };
        if let Some(said) = flags_said {
            crate::errln!(
                "note: {name}'s normalizer says {said}, but {source} {}, which transformers \
                 applies over it: masklm does too",
                flags.describe()
            );
        }
        if !replaced.is_empty() {
            let class = class.as_deref().unwrap_or("BertTokenizer (the default)");
            crate::errln!(
                "note: {name}'s {} {} not BERT's; its tokenizer_class {class} makes transformers 5 \
                 build BERT's from the vocabulary, and masklm does too (tokenizer_class \
                 PreTrainedTokenizerFast in {} would keep the file as it is)",
                replaced.join(", "),
                if replaced.len() == 1 { "is" } else { "are" },
                config_path.display()
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
    let mut tok = from_vocab_txt(&vocab, flags)?;
    add_folder_tokens(&mut tok, hf_dir, None)?;
    let text = tok
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serializing the tokenizer built from vocab.txt: {e}"))?;
    Ok((text, vocab))
}

/// What transformers' Python BERT tokenizer (`BertTokenizerLegacy`) does that the BERT tokenizer
/// masklm builds does not: it honours `do_basic_tokenize: false` and `never_split` (refused: the
/// two would tokenize otherwise), and composes the text (NFC) before BERT's steps, which differs
/// only where accents are kept (stripping decomposes the text, NFD, in both): a note.
fn check_legacy(config: &Value, config_path: &Path, flags: &Flags) -> Result<()> {
    if config.get("do_basic_tokenize") == Some(&Value::Bool(false)) {
        crate::usage!(
            "{}: do_basic_tokenize false (BertTokenizerLegacy then splits only at whitespace) is \
             not what masklm's BERT tokenizer does; remove the key to import the model with \
             BERT's basic tokenization",
            config_path.display()
        );
    }
    if let Some(list) = config
        .get("never_split")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    {
        crate::usage!(
            "{}: never_split {} keeps words whole that masklm's BERT tokenizer would split; make \
             them added tokens (added_tokens_decoder) instead, which both keep whole",
            config_path.display(),
            Value::Array(list.clone())
        );
    }
    let strips = flags.strip_accents.unwrap_or(flags.lowercase);
    if !strips {
        crate::errln!(
            "note: {} names BertTokenizerLegacy, transformers' Python tokenizer, which composes \
             characters (NFC) first; masklm tokenizes as BertTokenizer does, without that step, \
             so the two differ on text written with combining accents (NFD)",
            config_path.display()
        );
    }
    Ok(())
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

/// What masklm reads of tokenizer_config.json, read once.
#[derive(Debug)]
struct Settings {
    /// `tokenizer_class` (None when absent: the model type's, BERT's).
    class: Option<String>,
    flags: Flags,
    /// `clean_up_tokenization_spaces`.
    clean_up: bool,
    /// The whole file (`Null` when absent), for the checks of other keys.
    config: Value,
}

/// tokenizer_config.json's settings; HF's defaults when the file is absent.
fn read_flags(path: &Path) -> Result<Settings> {
    let mut flags = Flags {
        lowercase: true,
        strip_accents: None,
        chinese_chars: true,
    };
    if !path.is_file() {
        return Ok(Settings {
            class: None,
            flags,
            clean_up: false,
            config: Value::Null,
        });
    }
    let text = crate::io::read_to_string_capped(path, crate::io::MAX_SETTINGS_BYTES)
        .map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| UsageError::new(format!("{} is not valid JSON: {e}", path.display())))?;
    if !v.is_object() {
        crate::usage!(
            "{} is not a JSON object of settings (it holds {})",
            path.display(),
            json_kind(&v)
        );
    }
    // An absent or null flag takes transformers' default; any other non-boolean is refused
    // (transformers refuses some, and reads others by Python truth: "False" as true).
    let flag = |key: &str| -> Result<Option<bool>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => crate::usage!(
                "{}: {key} is {other}, not true or false; write it as a JSON boolean",
                path.display()
            ),
        }
    };
    flags.lowercase = flag("do_lower_case")?.unwrap_or(true);
    flags.strip_accents = flag("strip_accents")?;
    flags.chinese_chars = flag("tokenize_chinese_chars")?.unwrap_or(true);
    let class = match v.get("tokenizer_class") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(other) => crate::usage!(
            "{}: tokenizer_class is {other}, not a class name",
            path.display()
        ),
    };
    let clean_up = flag("clean_up_tokenization_spaces")?.unwrap_or(false);
    Ok(Settings {
        class,
        flags,
        clean_up,
        config: v,
    })
}

/// What a JSON value is, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Refuses a folder whose tokenizer_config.json or special_tokens_map.json renames one of BERT's
/// five special tokens (`"mask_token": "<mask>"`): masklm finds them by BERT's names, so it would
/// mask with, and map unknown pieces to, other tokens than the model's without a word.
/// `config` is tokenizer_config.json's content, as read from `config_path`.
fn check_special_names(config: &Value, config_path: &Path, hf_dir: &Path) -> Result<()> {
    let map_path = hf_dir.join("special_tokens_map.json");
    let map = read_json(&map_path)?;
    for (v, path) in [(config, config_path), (&map, map_path.as_path())] {
        for (attr, bert) in SPECIAL_ATTRS {
            let Some(t) = v.get(attr).filter(|t| !t.is_null()) else {
                continue;
            };
            let named = added_token(t, true, path)?.content;
            if named != bert {
                crate::usage!(
                    "{}: {attr} is {named:?}, not BERT's {bert:?}; masklm uses BERT's special \
                     tokens ({}) by name, so a model that renames one cannot be imported",
                    path.display(),
                    SPECIAL_ATTRS.map(|(_, t)| t).join(" ")
                );
            }
        }
    }
    Ok(())
}

/// What transformers 5's `BertTokenizer` makes of a tokenizer.json: it keeps the WordPiece
/// vocabulary and the added tokens and builds the rest ([`bert_pipeline`]) from
/// tokenizer_config.json's flags. Returns the text (the file's own, byte for byte, when that
/// changes nothing), what a BERT normalizer said before when the flags changed it, and the other
/// parts that were not BERT's and were replaced.
fn as_bert_json(
    text: &str,
    flags: &Flags,
    name: &str,
) -> Result<(String, Option<String>, Vec<&'static str>)> {
    let before: Value = serde_json::from_str(text)
        .map_err(|e| UsageError::new(format!("{name} is not valid JSON: {e}")))?;
    let mut tok: Tokenizer = text
        .parse()
        .map_err(|e| UsageError::new(format!("{name} is not a valid tokenizer.json: {e}")))?;
    bert_pipeline(&mut tok, flags, name)?;
    let rebuilt = tok
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serializing {name}: {e}"))?;
    let after: Value = serde_json::from_str(&rebuilt)?;
    // The WordPiece settings, without the vocabulary (kept as it is).
    let settings = |v: &Value| {
        let mut m = v["model"].clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("vocab");
        }
        m
    };
    let mut replaced = Vec::new();
    let mut flags_said = None;
    let old_normalizer = &before["normalizer"];
    if old_normalizer != &after["normalizer"] {
        if old_normalizer["type"] == "BertNormalizer" {
            let said: Vec<String> = ["lowercase", "strip_accents", "handle_chinese_chars"]
                .iter()
                .filter(|k| old_normalizer[**k] != after["normalizer"][**k])
                .map(|k| format!("{k} {}", old_normalizer[*k]))
                .collect();
            // A difference in another setting (clean_text) is a normalizer that is not BERT's.
            if said.is_empty() {
                replaced.push("normalizer");
            } else {
                flags_said = Some(said.join(", "));
            }
        } else {
            replaced.push("normalizer");
        }
    }
    for part in ["pre_tokenizer", "decoder", "post_processor"] {
        if before[part] != after[part] {
            replaced.push(part);
        }
    }
    if settings(&before) != settings(&after) {
        replaced.push("WordPiece settings");
    }
    if flags_said.is_none() && replaced.is_empty() {
        return Ok((text.to_string(), None, replaced));
    }
    Ok((rebuilt, flags_said, replaced))
}

/// transformers 5's `BertTokenizer` around a WordPiece vocabulary: WordPiece with `[UNK]`, `##`
/// continuations and words of at most 100 characters; the BERT normalizer with `f`'s flags
/// (text cleaning on); the BERT pre-tokenizer; the `##` decoder with cleanup; `[CLS] $A [SEP]`.
/// `name` names the tokenizer in messages.
fn bert_pipeline(tok: &mut Tokenizer, f: &Flags, name: &str) -> Result<()> {
    let mut wordpiece = match tok.get_model() {
        ModelWrapper::WordPiece(wp) => wp.clone(),
        _ => crate::usage!(
            "{name} is not a WordPiece tokenizer, but transformers 5 reads it as BERT's (its \
             tokenizer_class is BERT's, or it names none and the model is a BERT), which it \
             builds from a WordPiece vocabulary; set tokenizer_class PreTrainedTokenizerFast in \
             tokenizer_config.json to use the file as it is"
        ),
    };
    wordpiece.unk_token = "[UNK]".into();
    wordpiece.continuing_subword_prefix = CONTINUATION_PREFIX.into();
    wordpiece.max_input_chars_per_word = 100;
    tok.with_model(wordpiece);
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
                "{name} has no {t} token; a BERT tokenizer has [PAD] [UNK] [CLS] [SEP] [MASK]"
            ))
        })
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_post_processor(Some(crate::tokenizer::bert_post_processor(cls, sep)?));
    Ok(())
}

/// The tokenizer.json text `text` of the folder `hf_dir` with the folder's other added tokens
/// ([`add_folder_tokens`]); `text` itself when there are none.
fn with_folder_tokens(text: String, hf_dir: &Path, name: &str) -> Result<String> {
    let mut tok: Tokenizer = text
        .parse()
        .map_err(|e| UsageError::new(format!("{name} is not a valid tokenizer.json: {e}")))?;
    let before = tok.get_added_tokens_decoder();
    add_folder_tokens(&mut tok, hf_dir, Some(&text))?;
    if tok.get_added_tokens_decoder() == before {
        return Ok(text);
    }
    tok.to_string(false)
        .map_err(|e| anyhow::anyhow!("serializing {name}: {e}"))
}

/// A JSON file of an HF folder, `Null` when it is absent.
fn read_json(path: &Path) -> Result<Value> {
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let text = crate::io::read_to_string_capped(path, crate::io::MAX_TOKENIZER_BYTES)
        .map_err(|e| UsageError::new(format!("cannot read {}: {e}", path.display())))?;
    Ok(serde_json::from_str(&text)
        .map_err(|e| UsageError::new(format!("{} is not valid JSON: {e}", path.display())))?)
}

/// A token as tokenizer_config.json and special_tokens_map.json write it: a string, or an
/// object with `content` and the flags of `AddedToken` (absent ones take its defaults, with
/// `special` as given).
fn added_token(v: &Value, special: bool, path: &Path) -> Result<AddedToken> {
    let bad = || {
        UsageError::new(format!(
            "{}: {v} is not a token (a string, or an object with a string \"content\")",
            path.display()
        ))
    };
    if let Some(t) = v.as_str() {
        return Ok(AddedToken::from(t, special));
    }
    let content = v.get("content").and_then(Value::as_str).ok_or_else(bad)?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool);
    let special = flag("special").unwrap_or(special);
    Ok(AddedToken::from(content, special)
        .single_word(flag("single_word").unwrap_or(false))
        .lstrip(flag("lstrip").unwrap_or(false))
        .rstrip(flag("rstrip").unwrap_or(false))
        .normalized(flag("normalized").unwrap_or(!special)))
}

/// The tokens of a list (or of a dict's values) of tokens, each special.
fn token_list(v: &Value, path: &Path) -> Result<Vec<AddedToken>> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(|t| added_token(t, true, path))
        .collect()
}

/// Adds to `tok` the tokens transformers 5's `from_pretrained` adds from the folder `hf_dir`,
/// in its order:
/// - tokenizer_config.json's `added_tokens_decoder` (id → token with its flags), which
///   transformers ≥ 4.34 writes; a folder without one gives added_tokens.json's tokens (special,
///   and then not normalized, when tokenizer_config.json or special_tokens_map.json names them
///   as a special token), the tokenizer.json's own added tokens replacing those of their id;
/// - then each extra special token (`extra_special_tokens`, or the older
///   `additional_special_tokens`) that is not an added token yet.
///
/// Tokens the tokenizer already has with the same flags are skipped; a token already in the
/// vocabulary keeps its id, a new one takes the next. A note says when that id is not the
/// file's (transformers numbers them the same way).
fn add_folder_tokens(
    tok: &mut Tokenizer,
    hf_dir: &Path,
    tokenizer_json: Option<&str>,
) -> Result<()> {
    let config_path = hf_dir.join("tokenizer_config.json");
    let map_path = hf_dir.join("special_tokens_map.json");
    let added_path = hf_dir.join("added_tokens.json");
    let config = read_json(&config_path)?;
    // (id the files give, token), ordered by id.
    let mut from_files: BTreeMap<u64, (AddedToken, PathBuf)> = BTreeMap::new();
    let mut extras = config
        .get("extra_special_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| config.get("additional_special_tokens"))
        .map(|v| token_list(v, &config_path))
        .transpose()?
        .unwrap_or_default();
    match config.get("added_tokens_decoder") {
        Some(Value::Object(decoder)) => {
            for (id, t) in decoder {
                let id: u64 = id.parse().map_err(|_| {
                    UsageError::new(format!(
                        "{}: added_tokens_decoder key {id:?} is not a token id",
                        config_path.display()
                    ))
                })?;
                let token = added_token(t, false, &config_path)?;
                from_files.insert(id, (token, config_path.clone()));
            }
        }
        Some(v) if !v.is_null() => crate::usage!(
            "{}: added_tokens_decoder is not an object of id → token",
            config_path.display()
        ),
        _ => {
            // Before added_tokens_decoder: special_tokens_map.json names the special tokens.
            let map = read_json(&map_path)?;
            let mut named: Vec<String> = SPECIAL_ATTRS
                .iter()
                .filter_map(|(attr, _)| config.get(*attr))
                .map(|v| added_token(v, true, &config_path).map(|t| t.content))
                .collect::<Result<_>>()?;
            // The map's additional_special_tokens become extra special tokens only after
            // added_tokens.json is read (transformers renames them in the tokenizer's __init__),
            // so they do not make its tokens special.
            let mut late_extras = Vec::new();
            if let Value::Object(m) = &map {
                for (key, v) in m {
                    if key == "extra_special_tokens" {
                        for t in token_list(v, &map_path)? {
                            if !extras.iter().any(|e| e.content == t.content) {
                                extras.push(t);
                            }
                        }
                    } else if key == "additional_special_tokens" {
                        late_extras = token_list(v, &map_path)?;
                    } else if key.ends_with("_token") {
                        named.push(added_token(v, true, &map_path)?.content);
                    }
                }
            }
            let specials: Vec<String> = named
                .into_iter()
                .chain(extras.iter().map(|t| t.content.clone()))
                .collect();
            if extras.is_empty() {
                extras = late_extras;
            }
            if added_path.is_file() {
                let text = read_json(&added_path)?;
                let map: std::collections::HashMap<String, u64> = serde_json::from_value(text)
                    .map_err(|e| {
                        UsageError::new(format!(
                            "{} is not a JSON object of token → id: {e}",
                            added_path.display()
                        ))
                    })?;
                for (t, id) in map {
                    let special = specials.contains(&t);
                    from_files.insert(id, (AddedToken::from(t, special), added_path.clone()));
                }
            }
            if let Some(json) = tokenizer_json {
                let v: Value = serde_json::from_str(json)?;
                for t in v["added_tokens"].as_array().into_iter().flatten() {
                    if let Some(id) = t["id"].as_u64() {
                        let token = added_token(t, false, &hf_dir.join("tokenizer.json"))?;
                        from_files.insert(id, (token, hf_dir.join("tokenizer.json")));
                    }
                }
            }
        }
    }
    let had: Vec<AddedToken> = tok.get_added_tokens_decoder().into_values().collect();
    let mut known: Vec<String> = had.iter().map(|t| t.content.clone()).collect();
    let mut adding: Vec<(Option<(u64, PathBuf)>, AddedToken)> = Vec::new();
    for (id, (token, path)) in from_files {
        if !had.contains(&token) {
            known.push(token.content.clone());
            adding.push((Some((id, path)), token));
        }
    }
    for token in extras {
        if !known.contains(&token.content) {
            known.push(token.content.clone());
            adding.push((None, token));
        }
    }
    for (file_id, token) in adding {
        tok.add_tokens(std::slice::from_ref(&token));
        let got = tok.token_to_id(&token.content).map(u64::from);
        if let Some((id, path)) = file_id
            && got != Some(id)
        {
            crate::errln!(
                "note: {} gives {:?} id {id}, but it takes id {} (a token already in the \
                 vocabulary keeps its id, a new one takes the next), as transformers numbers it",
                path.display(),
                token.content,
                got.map_or("none".into(), |g| g.to_string())
            );
        }
    }
    Ok(())
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
    // Every special token must be a line: `add_special_tokens` below would append a missing
    // one past the ids config.json's vocab_size counts.
    for (_, t) in SPECIAL_ATTRS {
        if tok.token_to_id(t).is_none() {
            // A byte-order mark glues itself to the first line's token ("\u{feff}[PAD]").
            let bom = tok.token_to_id(&format!("\u{feff}{t}")).is_some();
            crate::usage!(
                "{name} has no {t} line{}; a BERT vocab.txt lists [PAD] [UNK] [CLS] [SEP] [MASK]",
                match bom {
                    true =>
                        " (its first line starts with a UTF-8 byte-order mark: save the file \
                             without one)",
                    false => "",
                }
            );
        }
    }
    bert_pipeline(&mut tok, f, &name)?;
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
        let Settings {
            class,
            flags: f,
            clean_up,
            ..
        } = read_flags(&p).unwrap();
        assert!(class.is_none() && f.lowercase && f.chinese_chars && f.strip_accents.is_none());
        assert!(!clean_up, "transformers 5's default");
        std::fs::write(
            &p,
            r#"{"do_lower_case": false, "strip_accents": true, "clean_up_tokenization_spaces": true}"#,
        )
        .unwrap();
        let Settings {
            flags: f, clean_up, ..
        } = read_flags(&p).unwrap();
        assert!(!f.lowercase && f.strip_accents == Some(true) && clean_up);
        std::fs::write(&p, r#"{"strip_accents": null, "tokenizer_class": null}"#).unwrap();
        assert_eq!(read_flags(&p).unwrap().flags.strip_accents, None);
        // What transformers refuses, masklm refuses: "False" would read as true in Python.
        for (text, needle) in [
            (
                r#"{"do_lower_case": "False"}"#,
                "do_lower_case is \"False\"",
            ),
            (r#"{"strip_accents": 1}"#, "strip_accents is 1"),
            (r#"{"tokenizer_class": 7}"#, "tokenizer_class is 7"),
            ("[]", "holds a list"),
            ("null", "holds null"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", read_flags(&p).unwrap_err());
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_renamed_special_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tokenizer_config.json");
        let map = dir.path().join("special_tokens_map.json");
        std::fs::write(&config, r#"{"mask_token": "[MASK]", "unk_token": null}"#).unwrap();
        std::fs::write(&map, r#"{"pad_token": {"content": "[PAD]"}}"#).unwrap();
        check_special_names(&read_json(&config).unwrap(), &config, dir.path()).unwrap();
        std::fs::write(
            &map,
            r#"{"unk_token": {"content": "<unk>", "lstrip": false}}"#,
        )
        .unwrap();
        let e = format!(
            "{:#}",
            check_special_names(&read_json(&config).unwrap(), &config, dir.path()).unwrap_err()
        );
        assert!(
            e.contains("unk_token is \"<unk>\"") && e.contains("special_tokens_map"),
            "{e}"
        );
        std::fs::write(&config, r#"{"mask_token": "<mask>"}"#).unwrap();
        let e = format!(
            "{:#}",
            check_special_names(&read_json(&config).unwrap(), &config, dir.path()).unwrap_err()
        );
        assert!(
            e.contains("mask_token is \"<mask>\"") && e.contains("tokenizer_config"),
            "{e}"
        );
    }

    #[test]
    fn vocab_txt_builds_bert_wordpiece_with_specials_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vocab.txt"),
            "[PAD]\n[unused0]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n##s\n.\n",
        )
        .unwrap();
        let HfTokenizer {
            json, source: from, ..
        } = read_hf(dir.path()).unwrap();
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
        // What transformers 5 writes when it saves its Python tokenizer is the same tokenizer,
        // unless it turns off BERT's basic tokenization or keeps words whole.
        let config = dir.path().join("tokenizer_config.json");
        let legacy = r#"{"tokenizer_class": "BertTokenizerLegacy", "do_lower_case": true"#;
        std::fs::write(&config, format!("{legacy}, \"never_split\": null}}")).unwrap();
        assert_eq!(read_hf(dir.path()).unwrap().json, json);
        for (extra, needle) in [
            (r#""do_basic_tokenize": false"#, "do_basic_tokenize false"),
            (r#""never_split": ["cats"]"#, "never_split [\"cats\"]"),
        ] {
            std::fs::write(&config, format!("{legacy}, {extra}}}")).unwrap();
            let e = format!("{:#}", read_hf(dir.path()).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn added_tokens_json_beside_vocab_txt_tokenizes_as_transformers() {
        // The hf-tiny fixture's vocab.txt (99 ids) with two added tokens; the expected ids are
        // what transformers 5.25.0's AutoTokenizer gave for the same folder.
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny");
        for f in ["vocab.txt", "tokenizer_config.json"] {
            std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
        }
        let added = dir.path().join("added_tokens.json");
        std::fs::write(&added, r#"{"Zeta-X": 100, "covid": 99}"#).unwrap();
        let json = read_hf(dir.path()).unwrap().json;
        let tok = BertTokenizer::from_json(&json, "t").unwrap();
        assert_eq!(tok.vocab_size(), 101);
        let ids = |t: &str| tok.encode_with_specials(t).unwrap();
        assert_eq!(
            ids("covid and COVID zeta-x Zeta-X the"),
            vec![5, 99, 67, 99, 100, 100, 50, 6]
        );
        assert_eq!(ids("xcovidx"), vec![5, 31, 99, 31, 6]);
        // A gap in the file's ids and a token already in vocab.txt: transformers numbers the
        // new token next (100) and keeps "the" at 50.
        std::fs::write(&added, r#"{"covid": 99, "zeta": 101, "the": 102}"#).unwrap();
        let json = read_hf(dir.path()).unwrap().json;
        let tok = BertTokenizer::from_json(&json, "t").unwrap();
        assert_eq!(tok.vocab_size(), 101);
        assert_eq!(
            tok.encode_with_specials("covid zeta thethe").unwrap(),
            vec![5, 99, 100, 50, 50, 6]
        );
        std::fs::write(&added, "[1, 2]").unwrap();
        let e = read_hf(dir.path()).unwrap_err().to_string();
        assert!(e.contains("added_tokens.json is not a JSON object"), "{e}");
    }

    #[test]
    fn added_tokens_decoder_and_extra_special_tokens_tokenize_as_transformers() {
        // tokenizer_config.json as transformers >= 4.34 writes it: the added tokens with their
        // flags, [E1] special; <ent> an extra special token only. The expected ids are what
        // transformers 5.25.0's AutoTokenizer gave for the same folder, with vocab.txt alone and
        // with tokenizer.json beside it.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny");
        let mut config: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture.join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        let token = |content: &str, special: bool| {
            json!({"content": content, "special": special, "normalized": !special,
                   "lstrip": false, "rstrip": false, "single_word": false})
        };
        config["added_tokens_decoder"] =
            json!({"99": token("[E1]", true), "100": token("zeta-x", false)});
        config["extra_special_tokens"] = json!(["[E1]", "<ent>"]);
        for files in [&["vocab.txt"][..], &["vocab.txt", "tokenizer.json"]] {
            let dir = tempfile::tempdir().unwrap();
            for f in files {
                std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
            }
            let path = dir.path().join("tokenizer_config.json");
            std::fs::write(&path, config.to_string()).unwrap();
            let json = read_hf(dir.path()).unwrap().json;
            let tok = BertTokenizer::from_json(&json, "t").unwrap();
            assert_eq!(tok.vocab_size(), 102, "{files:?}");
            let ids = |t: &str| tok.encode_with_specials(t).unwrap();
            assert_eq!(
                ids("[E1] Zeta-X went [e1] zeta-x <ent> a<ent>b"),
                [5, 99, 100, 30, 81, 90, 96, 4, 4, 4, 100, 101, 8, 101, 9, 6],
                "{files:?}"
            );
            assert_eq!(ids("the [MASK] <ENT>"), [5, 50, 7, 4, 12, 90, 96, 4, 6]);
            // Special added tokens are never masked, as HF's collator never picks them.
            let table = tok.token_table();
            assert!(table.is_special(99) && table.is_special(101) && !table.is_special(100));
            // Export lists them as transformers 5 saves them, and reads back the same.
            let files = hf_files(&tok, 64).unwrap();
            let saved: Value = serde_json::from_str(&files[2].1).unwrap();
            assert_eq!(saved["extra_special_tokens"], json!(["[E1]", "<ent>"]));
            let out = tempfile::tempdir().unwrap();
            for (name, text) in &files {
                std::fs::write(out.path().join(name), text).unwrap();
            }
            let json = read_hf(out.path()).unwrap().json;
            let back = BertTokenizer::from_json(&json, "t").unwrap();
            let again = |t: &str| back.encode_with_specials(t).unwrap();
            assert_eq!(
                again("[E1] Zeta-X <ent> a<ent>b"),
                ids("[E1] Zeta-X <ent> a<ent>b")
            );
        }
    }

    /// The tokenizer.json that an HF folder holding only `vocab` as vocab.txt gives.
    fn tokenizer_json_of(vocab: &str) -> Value {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
        let json = read_hf(dir.path()).unwrap().json;
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
        assert_eq!(read_hf(dir.path()).unwrap().json, uncased);
        assert_eq!(ids(&uncased), [2, 5, 3]);
        // A cased model's flags over an uncased normalizer: cased, as transformers reads it.
        std::fs::write(&config, r#"{"do_lower_case": false}"#).unwrap();
        let cased = read_hf(dir.path()).unwrap().json;
        assert!(!lowercases(&cased));
        assert_eq!(ids(&cased), [2, 6, 3]);
        // The generic class uses tokenizer.json as it is.
        let generic = r#"{"tokenizer_class": "PreTrainedTokenizerFast", "do_lower_case": false}"#;
        std::fs::write(&config, generic).unwrap();
        assert_eq!(read_hf(dir.path()).unwrap().json, uncased);
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
    fn a_bert_class_rebuilds_what_is_not_berts_as_transformers_5_does() {
        // transformers 5's BertTokenizer keeps a tokenizer.json's vocabulary and builds the
        // rest: a file whose other parts are not BERT's reads as the one from its vocab.txt.
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nThe\ndog\n##s\n";
        let bert = tokenizer_json_of(vocab);
        let mut odd = bert.clone();
        odd["normalizer"] = Value::Null;
        odd["pre_tokenizer"] = json!({"type": "WhitespaceSplit"});
        odd["decoder"] = Value::Null;
        odd["post_processor"] = Value::Null;
        odd["model"]["max_input_chars_per_word"] = json!(3);
        // Special tokens that are only vocabulary entries.
        odd["added_tokens"] = json!([]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), odd.to_string()).unwrap();
        let config = dir.path().join("tokenizer_config.json");
        std::fs::write(&config, r#"{"tokenizer_class": "BertTokenizer"}"#).unwrap();
        let rebuilt = read_hf(dir.path()).unwrap().json;
        let rebuilt: Value = serde_json::from_str(&rebuilt).unwrap();
        for part in [
            "normalizer",
            "pre_tokenizer",
            "decoder",
            "post_processor",
            "model",
        ] {
            assert_eq!(rebuilt[part], bert[part], "{part}");
        }
        let ids = |json: &str| {
            let tok = BertTokenizer::from_json(json, "t").unwrap();
            tok.encode_with_specials("The dogs, [MASK]").unwrap()
        };
        // Lowercased, "dogs" split, "," unknown, [MASK] special (not "[", "mask", "]").
        assert_eq!(ids(&rebuilt.to_string()), [2, 5, 7, 8, 1, 4, 3]);
        // The generic class keeps the file as it is, and export names it so.
        std::fs::write(&config, r#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#).unwrap();
        let kept = read_hf(dir.path()).unwrap().json;
        assert_eq!(serde_json::from_str::<Value>(&kept).unwrap(), odd);
        let class = |json: &str| {
            let tok = BertTokenizer::from_json(json, "t").unwrap();
            let files = hf_files(&tok, 64).unwrap();
            let config: Value = serde_json::from_str(&files[2].1).unwrap();
            config["tokenizer_class"].clone()
        };
        assert_eq!(class(&kept), "PreTrainedTokenizerFast");
        assert_eq!(class(&rebuilt.to_string()), "BertTokenizer");
        let mut bert_but_decoder = bert.clone();
        bert_but_decoder["decoder"]["cleanup"] = json!(false);
        assert_eq!(
            class(&bert_but_decoder.to_string()),
            "PreTrainedTokenizerFast"
        );
    }

    #[test]
    fn a_bert_normalizer_without_text_cleaning_is_replaced_not_said_to_differ_in_flags() {
        let bert = tokenizer_json_of("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n");
        let flags = Flags {
            lowercase: true,
            strip_accents: None,
            chinese_chars: true,
        };
        let (_, said, replaced) = as_bert_json(&bert.to_string(), &flags, "t").unwrap();
        assert_eq!((said, replaced), (None, vec![]));
        let mut unclean = bert.clone();
        unclean["normalizer"]["clean_text"] = json!(false);
        let (text, said, replaced) = as_bert_json(&unclean.to_string(), &flags, "t").unwrap();
        assert_eq!((said, replaced), (None, vec!["normalizer"]));
        let rebuilt: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(rebuilt["normalizer"], bert["normalizer"]);
        let mut cased = bert.clone();
        cased["normalizer"]["lowercase"] = json!(false);
        let (_, said, replaced) = as_bert_json(&cased.to_string(), &flags, "t").unwrap();
        assert_eq!(
            (said.as_deref(), replaced),
            (Some("lowercase false"), vec![])
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

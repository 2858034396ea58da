//! `model.safetensors` ↔ [`BertForMaskedLM`], through burn-store.
//!
//! Export: burn's `BurnToPyTorchAdapter` turns each Linear weight `[in, out]` into PyTorch's
//! `[out, in]` and LayerNorm `gamma`/`beta` into `weight`/`bias`; then [`hf_key`] renames the two
//! Rust fields. The decoder is tied, so, as transformers saves a tied BertForMaskedLM, neither
//! `cls.predictions.decoder.weight` nor `cls.predictions.decoder.bias` is written.
//!
//! Import: every key of the file is first brought to its canonical HF name (the layouts found
//! in the wild: with or without `bert.`, `LayerNorm.gamma`/`beta`, an explicit decoder), then
//! checked against the keys and shapes the config implies, all before one value is loaded, so a
//! refusal names the key. `PyTorchToBurnAdapter` transposes back; `FloatCastAdapter` turns
//! float16 / bfloat16 checkpoints into float32.

use super::config::HfConfig;
use super::{burn_path, hf_key};
use crate::error::UsageError;
use crate::model::{BertConfig, BertForMaskedLM};
use anyhow::{Context, Result};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ChainAdapter, FloatCastAdapter, ModuleAdapter, ModuleContext,
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore, bridge,
};
use burn::tensor::DType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const WORD_EMBEDDINGS: &str = "bert.embeddings.word_embeddings.weight";
const DECODER_WEIGHT: &str = "cls.predictions.decoder.weight";
const DECODER_BIAS: &str = "cls.predictions.decoder.bias";
const BIAS: &str = "cls.predictions.bias";

/// Tensors of BERT pretraining checkpoints that a masked LM does not use: the pooler and the
/// next-sentence head (bert-base-uncased has both), and the `position_ids` / `token_type_ids`
/// buffers older transformers saved. transformers skips them too, with a warning.
fn is_unused_by_mlm(key: &str) -> bool {
    key.starts_with("bert.pooler.")
        || key.starts_with("cls.seq_relationship.")
        || key == "bert.embeddings.position_ids"
        || key == "bert.embeddings.token_type_ids"
}

/// Renames burn paths to HF keys, after `BurnToPyTorchAdapter` in the export chain.
#[derive(Debug, Clone)]
struct HfNames;

impl ModuleAdapter for HfNames {
    fn adapt(&self, mut tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        tensor.name = hf_key(&tensor.name);
        tensor
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

fn to_hf() -> ChainAdapter {
    BurnToPyTorchAdapter.chain(HfNames)
}

/// Writes `model` to `path` in HF's layout (replacing the file if it exists).
pub fn save(model: &BertForMaskedLM, path: &Path) -> Result<()> {
    // transformers 4 refuses a safetensors file whose metadata `format` is not "pt"; burn
    // writes "safetensors" by default.
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(to_hf())
        .metadata("format", "pt")
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    sort_header(path).with_context(|| format!("rewriting the header of {}", path.display()))
}

/// Rewrites the safetensors file `path` with its header's keys sorted: burn writes the
/// `__metadata__` entries in a hash map's order, which changes from run to run, so two exports
/// of one checkpoint differed in their bytes. The tensors' bytes are copied as they are (their
/// offsets count from the end of the header).
fn sort_header(path: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let mut file = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let mut header = Vec::new();
    (&mut file)
        .take(u64::from_le_bytes(len))
        .read_to_end(&mut header)?;
    let mut sorted = serde_json::to_vec(&sorted_keys(serde_json::from_slice(&header)?))?;
    // Padded with spaces to 8 bytes, as safetensors aligns the data after it.
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    if sorted == header {
        return Ok(());
    }
    crate::io::replace_with(path, |tmp| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        out.write_all(&(sorted.len() as u64).to_le_bytes())?;
        out.write_all(&sorted)?;
        std::io::copy(&mut file, &mut out)?;
        out.flush()?;
        Ok(())
    })
}

/// `v` with the keys of every object in sorted order.
fn sorted_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// HF key → shape (Linear weights `[out, in]`) of every parameter of `model`.
pub fn expected(model: &BertForMaskedLM) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, Some(Box::new(to_hf())), false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect()
}

/// What [`load`] read.
pub struct Loaded {
    pub model: BertForMaskedLM,
    pub file: PathBuf,
    pub tensors: usize,
    pub ignored: Vec<String>,
    /// The masked-LM head's keys, initialised as BERT initialises them, when the checkpoint is
    /// a base model (`BertModel`) without one.
    pub initialised: Vec<String>,
}

/// The keys of the masked-LM head (`BertOnlyMLMHead`), which a base model's checkpoint lacks.
const HEAD_PREFIX: &str = "cls.predictions.";

/// Loads the weights of the HF folder `hf_dir` into a model of `bert`'s sizes (from its
/// config.json). A base model without the masked-LM head gets the head BERT's initialisation
/// draws from `seed`, as transformers' `BertForMaskedLM.from_pretrained` initialises it (with a
/// warning) for such a checkpoint.
pub fn load(bert: &BertConfig, seed: u64, hf_dir: &Path, hf: &HfConfig) -> Result<Loaded> {
    let (file, raw) = read_file(hf_dir)?;
    let name = file.display().to_string();
    let device = burn::prelude::Device::flex();
    let model = bert.init_for_load(&device);
    let (tensors, ignored, initialised) = match_keys(raw, &expected(&model), hf, &name)?;
    let mut model = match initialised.is_empty() {
        true => model,
        false => bert.init_seeded(seed, &device),
    };
    let n = tensors.len();
    let adapter = PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32));
    let r = model.apply(tensors, None, Some(Box::new(adapter)), false);
    // Every key and shape was checked above, so this is a bug, not bad input.
    let head = burn_path(HEAD_PREFIX);
    let missing_ok =
        r.missing.iter().all(|(p, _)| p.starts_with(&head)) && r.missing.len() == initialised.len();
    if !(r.errors.is_empty() && missing_ok && r.unused.is_empty()) {
        anyhow::bail!("loading {name} into the model went wrong after the checks passed:\n{r}");
    }
    crate::train::checkpoint::check_finite(&model, &file)?;
    Ok(Loaded {
        model,
        file,
        tensors: n,
        ignored,
        initialised,
    })
}

/// The tensors of `hf_dir`'s weights by key, from the first of what transformers'
/// `from_pretrained` looks for in a local folder, in its order: `model.safetensors`, a sharded
/// safetensors checkpoint's `model.safetensors.index.json`, `pytorch_model.bin`, a sharded
/// `pytorch_model.bin.index.json`. The path returned names what was read.
fn read_file(hf_dir: &Path) -> Result<(PathBuf, BTreeMap<String, PackTensor>)> {
    for (name, sharded) in [
        ("model.safetensors", false),
        ("model.safetensors.index.json", true),
        ("pytorch_model.bin", false),
        ("pytorch_model.bin.index.json", true),
    ] {
        let path = hf_dir.join(name);
        if !path.is_file() {
            continue;
        }
        let tensors = if sharded {
            read_shards(hf_dir, &path)?
        } else {
            read_one(&path)?
        };
        return Ok((path, tensors));
    }
    crate::usage!(
        "{} has neither model.safetensors nor pytorch_model.bin (nor a sharded checkpoint's \
         index of either); give a folder written by transformers' save_pretrained",
        hf_dir.display()
    )
}

/// The tensors of one weights file, safetensors or PyTorch's by its name.
fn read_one(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let unreadable = |e: String| {
        UsageError::new(format!(
            "cannot read {}: {e}; re-save it with transformers' save_pretrained",
            path.display()
        ))
    };
    let map = if path.extension().is_some_and(|e| e == "safetensors") {
        SafetensorsStore::from_file(path)
            .get_all_tensors()
            .map_err(|e| unreadable(e.to_string()))?
            .clone()
    } else {
        PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_tensors()
            .map_err(|e| unreadable(e.to_string()))?
            .clone()
    };
    Ok(map)
}

/// The tensors of a sharded checkpoint: each key of the index's `weight_map` from the shard it
/// names (a file beside the index).
fn read_shards(hf_dir: &Path, index: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let text = crate::io::read_to_string_capped(index, crate::io::MAX_TOKENIZER_BYTES)?;
    let bad = |what: String| UsageError::new(format!("{}: {what}", index.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(bad("no \"weight_map\" object (key → shard file)".into()).into());
    };
    // Shard file → the keys the index puts there.
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, file) in map {
        let Some(file) = file.as_str() else {
            return Err(bad(format!("the shard of {key} is not a file name")).into());
        };
        // A bare file name: the index may not point outside its folder.
        if Path::new(file).file_name().and_then(|f| f.to_str()) != Some(file) {
            return Err(bad(format!(
                "{key} is in {file:?}, which is not a file beside it"
            ))
            .into());
        }
        shards.entry(file).or_default().push(key);
    }
    let mut tensors = BTreeMap::new();
    for (file, keys) in shards {
        let path = hf_dir.join(file);
        if !path.is_file() {
            return Err(bad(format!("its shard {} is missing", path.display())).into());
        }
        let mut all = read_one(&path)?;
        for key in keys {
            let t = all
                .remove(key)
                .ok_or_else(|| bad(format!("{key} is not in its shard {}", path.display())))?;
            tensors.insert(key.to_string(), t);
        }
    }
    Ok(tensors)
}

/// The canonical HF key of a checkpoint key: `bert.` prefixed (base-model checkpoints omit
/// it), and TF-era LayerNorm `gamma`/`beta` named `weight`/`bias`.
pub fn canonical(key: &str) -> String {
    let prefixed = if ["embeddings.", "encoder.", "pooler."]
        .iter()
        .any(|p| key.starts_with(p))
    {
        format!("bert.{key}")
    } else {
        key.to_string()
    };
    match prefixed.rsplit_once('.') {
        Some((head, "gamma")) if head.ends_with("LayerNorm") => format!("{head}.weight"),
        Some((head, "beta")) if head.ends_with("LayerNorm") => format!("{head}.bias"),
        _ => prefixed,
    }
}

/// Checks the checkpoint's keys against `expected` (HF key → shape) and returns its tensors
/// named by burn path, the keys ignored, and the head's keys to initialise (all of them when
/// the checkpoint has none of the head, else none). Every refusal names the key.
fn match_keys(
    raw: BTreeMap<String, PackTensor>,
    expected: &BTreeMap<String, Vec<usize>>,
    hf: &HfConfig,
    name: &str,
) -> Result<(Vec<PackTensor>, Vec<String>, Vec<String>)> {
    let mut by_key: BTreeMap<String, PackTensor> = BTreeMap::new();
    for (key, t) in raw {
        let c = canonical(&key);
        if let Some(other) = by_key.insert(c.clone(), t) {
            crate::usage!(
                "{name} holds {c} twice (as {key} and as {}); keep one of them",
                other.name
            );
        }
    }
    tied_decoder(&mut by_key, hf, name)?;
    let ignored: Vec<String> = by_key
        .keys()
        .filter(|k| is_unused_by_mlm(k))
        .cloned()
        .collect();
    by_key.retain(|k, _| !is_unused_by_mlm(k));
    // A base model (BertModel, a sentence encoder): no key of the head at all. A head with
    // some keys missing is a damaged checkpoint, refused by key below.
    let initialised: Vec<String> = if by_key.keys().any(|k| k.starts_with(HEAD_PREFIX)) {
        Vec::new()
    } else {
        expected
            .keys()
            .filter(|k| k.starts_with(HEAD_PREFIX))
            .cloned()
            .collect()
    };
    let to_load: BTreeMap<String, Vec<usize>> = expected
        .iter()
        .filter(|(k, _)| !initialised.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    check_keys(&by_key, &to_load, name)?;
    let tensors = by_key
        .into_iter()
        .map(|(key, mut t)| {
            t.name = burn_path(&key);
            t
        })
        .collect();
    Ok((tensors, ignored, initialised))
}

/// Unknown, missing, mis-shaped and non-float tensors, refused together, each by key.
fn check_keys(
    by_key: &BTreeMap<String, PackTensor>,
    expected: &BTreeMap<String, Vec<usize>>,
    name: &str,
) -> Result<()> {
    let mut problems: Vec<String> = by_key
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(|k| format!("{k} is not part of a BERT masked LM"))
        .collect();
    for (key, shape) in expected {
        let Some(t) = by_key.get(key) else {
            problems.push(format!("it lacks {key} (shape {shape:?})"));
            continue;
        };
        let found = t.shape.to_vec();
        if &found != shape {
            problems.push(format!(
                "{key} has shape {found:?} but config.json implies {shape:?}"
            ));
        } else if !t.dtype.is_float() {
            problems.push(format!("{key} is {:?}, not a float tensor", t.dtype));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 8;
    let more = problems.len().saturating_sub(SHOWN);
    problems.truncate(SHOWN);
    if more > 0 {
        problems.push(format!("and {more} more"));
    }
    crate::usage!(
        "{name} does not fit its config.json as a BertForMaskedLM (or BertForPreTraining) \
         checkpoint:\n  - {}",
        problems.join("\n  - ")
    )
}

/// masklm's decoder is the word-embedding matrix itself. A stored decoder weight is accepted
/// when it equals the embeddings (a tied model saved in full) and dropped, or taken as the
/// embeddings when they are absent and config.json ties them; a stored decoder bias is
/// `cls.predictions.bias` under its other name (HF ties the two).
fn tied_decoder(
    by_key: &mut BTreeMap<String, PackTensor>,
    hf: &HfConfig,
    name: &str,
) -> Result<()> {
    match by_key.remove(DECODER_WEIGHT) {
        Some(d) => match by_key.get(WORD_EMBEDDINGS) {
            Some(w) if !same_values(&d, w)? => crate::usage!(
                "{name}: {DECODER_WEIGHT} differs from {WORD_EMBEDDINGS}; masklm's decoder is \
                 tied to the word embeddings, so an untied decoder cannot be imported"
            ),
            Some(_) => {}
            // A tied model saved under the decoder's name alone: transformers loads it into
            // both, as one tensor.
            None if hf.tie_word_embeddings => {
                by_key.insert(WORD_EMBEDDINGS.to_string(), d);
            }
            None => {}
        },
        None if !hf.tie_word_embeddings => crate::usage!(
            "config.json sets tie_word_embeddings to false but {name} has no {DECODER_WEIGHT}; \
             masklm's decoder is tied to the word embeddings"
        ),
        None => {}
    }
    if let Some(b) = by_key.remove(DECODER_BIAS) {
        match by_key.get(BIAS) {
            Some(bias) if !same_values(&b, bias)? => crate::usage!(
                "{name}: {DECODER_BIAS} differs from {BIAS}; in BERT they are one tensor"
            ),
            Some(_) => {}
            None => {
                by_key.insert(BIAS.to_string(), b);
            }
        }
    }
    Ok(())
}

/// Same shape and the same values (compared as f32).
fn same_values(a: &PackTensor, b: &PackTensor) -> Result<bool> {
    if a.shape != b.shape {
        return Ok(false);
    }
    let values = |t: &PackTensor| -> Result<Vec<f32>> {
        let data = bridge::to_data(t).map_err(|e| anyhow::anyhow!("reading {}: {e}", t.name))?;
        data.convert_dtype(DType::F32)
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading {}: {e:?}", t.name))
    };
    // A NaN stored twice is the same value here (the finite check after loading names it).
    let same = |x: &f32, y: &f32| x == y || x.to_bits() == y.to_bits();
    let (a, b) = (values(a)?, values(b)?);
    Ok(a.iter().zip(&b).all(|(x, y)| same(x, y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_in_the_wild_become_canonical() {
        for (found, key) in [
            (
                "embeddings.LayerNorm.gamma",
                "bert.embeddings.LayerNorm.weight",
            ),
            (
                "bert.encoder.layer.0.output.LayerNorm.beta",
                "bert.encoder.layer.0.output.LayerNorm.bias",
            ),
            (
                "encoder.layer.11.attention.self.query.weight",
                "bert.encoder.layer.11.attention.self.query.weight",
            ),
            ("cls.predictions.bias", "cls.predictions.bias"),
            (
                "cls.predictions.transform.LayerNorm.weight",
                "cls.predictions.transform.LayerNorm.weight",
            ),
        ] {
            assert_eq!(canonical(found), key);
        }
        assert!(is_unused_by_mlm("bert.pooler.dense.weight"));
        assert!(!is_unused_by_mlm(
            "bert.embeddings.token_type_embeddings.weight"
        ));
    }
}

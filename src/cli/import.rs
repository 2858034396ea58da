//! `masklm import`: a Hugging Face BERT masked-LM folder as a masklm checkpoint.

use super::ConfigArgs;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An HF folder: config.json, model.safetensors or pytorch_model.bin (or a sharded
    /// checkpoint's index and shards), tokenizer.json or vocab.txt
    #[arg(long, value_name = "HF_DIR")]
    pub hf: PathBuf,
    /// The checkpoint folder to write (model.bpk, config.toml, tokenizer.json, state.json)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a folder that is not empty, replacing the files import writes
    #[arg(long)]
    pub force: bool,
    /// The settings saved beside the weights (data, train); [model] always comes from
    /// config.json
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(a: ImportArgs) -> Result<()> {
    if let Some(set) = a
        .config
        .sets
        .iter()
        .find(|s| s.trim_start().starts_with("model."))
    {
        crate::usage!(
            "import --set {set}: import takes [model] from {0}, as the weights are shaped by it; \
             the keys that only shape training (the dropouts, initializer_range) can be set when \
             training from the import: masklm train --config {1}/config.toml --init-from {1} --set \
             train.out_dir=… --set model.…",
            a.hf.join("config.json").display(),
            a.out.display()
        );
    }
    // Validated by `import` once [model] is config.json's: the sizes a --set checks against.
    let base = crate::config::Config::load_unvalidated(a.config.config.as_deref(), &a.config.sets)?;
    let r = crate::hf::import(&a.hf, &base, &a.out, a.force)?;
    crate::outln!(
        "imported {} tensors from {} and the tokenizer from {} → {}",
        r.tensors,
        r.weights_file.display(),
        r.tokenizer_source.display(),
        r.dir.display()
    )?;
    if !r.ignored.is_empty() {
        crate::outln!(
            "ignored (not part of a masked LM): {}",
            r.ignored.join(", ")
        )?;
    }
    if !r.initialised.is_empty() {
        // As transformers' "Some weights of BertForMaskedLM were not initialized from the model
        // checkpoint … You should probably TRAIN this model".
        crate::errln!(
            "warning: {} has no masked-LM head (a base model, BertModel): {} initialised as BERT \
             initialises them (train.seed), as transformers does; its predictions mean nothing \
             until it is trained: masklm train --config {2}/config.toml --init-from {2} --set \
             train.out_dir=…",
            r.weights_file.display(),
            r.initialised.join(", "),
            r.dir.display()
        );
    }
    if let Some((rows, ids)) = r.padded_vocab {
        crate::outln!(
            "vocabulary padded: {rows} embedding rows for the tokenizer's {ids} ids, kept as \
             model.vocab_size (the rows past the ids are never an input or a label)"
        )?;
        // Padding for matrix units adds at most a few hundred rows (NVIDIA's BERT: to a multiple
        // of 8; Megatron's: of 128 per tensor-parallel rank); many more rows than that suggest
        // another model's tokenizer, whose ids would read the wrong rows.
        if rows > ids.next_multiple_of(1024) {
            crate::errln!(
                "warning: {} rows past the tokenizer's {ids} ids is more than padding adds: check \
                 that the tokenizer is the one this model was trained with",
                rows - ids
            );
        }
    }
    if a.config.config.is_none() {
        // What `train --config DIR/config.toml` will use unless told otherwise.
        let t = &base.data;
        crate::errln!(
            "note: the [data] and [train] settings saved in {} are the embedded default \
             config's{} (data.train {:?}, data.seq_len {}, train.steps {}); give import --config \
             YOURS, or --set them when training",
            r.dir.join("config.toml").display(),
            if a.config.sets.is_empty() {
                ""
            } else {
                " with your --set"
            },
            t.train,
            r.seq_len_lowered.map_or(t.seq_len, |(_, after)| after),
            base.train.steps
        );
    }
    if let Some((before, after)) = r.seq_len_lowered {
        crate::outln!("data.seq_len {before} lowered to max_position_embeddings {after}")?;
    }
    crate::outln!(
        "use it with: masklm fill-mask --checkpoint {0} …, or masklm train --config {0}/config.toml \
         --init-from {0} --set train.out_dir=…",
        r.dir.display()
    )?;
    Ok(())
}

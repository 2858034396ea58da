#!/usr/bin/env python3
"""Builds a tiny random Hugging Face `BertForMaskedLM` fixture plus reference logits.

Run by hand where `pip install torch transformers` works, from the project root:

    python3 scripts/make_hf_fixture.py

Writes:
  tests/fixtures/hf-tiny/         config.json, model.safetensors, tokenizer files, vocab.txt,
                                  logits.json (transformers' logits + fill-mask output), README.md
  tests/fixtures/hf-tiny-legacy/  the same weights in an older key layout (LayerNorm.gamma/beta,
                                  explicit cls.predictions.decoder.{weight,bias}), config.json and
                                  vocab.txt only (no tokenizer.json), README.md

Everything is deterministic (fixed seed, CPU, float32). Sizes are deliberately odd
(vocab 99, hidden 32, 4 heads, intermediate 37) and every parameter is re-drawn with a large
std so that a swapped or transposed tensor changes the logits.
"""
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, pipeline

OUT = "tests/fixtures/hf-tiny"
LEGACY = "tests/fixtures/hf-tiny-legacy"
VOCAB_SIZE = 99
SEED = 1234

TEXTS = [
    "the cat sat on the mat.",
    "once upon a time there was a little girl named lily.",
    "the [MASK] sat on the mat!",
    "a dog?",
]


def build_vocab():
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [str(d) for d in range(10)]
    vocab += [".", ",", "!", "?", "'", "-"]
    words = ["the", "cat", "dog", "sat", "on", "mat", "once", "upon", "time", "there",
             "was", "little", "girl", "named", "lily", "she", "he", "and", "in", "to", "big",
             "ran", "saw", "happy", "day", "sun", "tree"]
    vocab += words  # "a" is already a single-character token
    letters = "abcdefghijklmnopqrstuvwxyz"
    for ch in letters:
        if len(vocab) >= VOCAB_SIZE:
            break
        vocab.append("##" + ch)
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    assert len(set(vocab)) == VOCAB_SIZE
    return vocab


def main():
    torch.manual_seed(SEED)
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(LEGACY, exist_ok=True)

    vocab = build_vocab()
    vocab_path = os.path.join(OUT, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")

    if int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 merged BertTokenizerFast into BertTokenizer, which takes `vocab`
        # (and silently ignores `vocab_file`).
        tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=64)
    else:
        tok = BertTokenizerFast(vocab_file=vocab_path, do_lower_case=True, model_max_length=64)
    assert len(tok) == VOCAB_SIZE, len(tok)

    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        pad_token_id=vocab.index("[PAD]"),
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    model = BertForMaskedLM(config)
    model.eval()

    # Re-draw every parameter (tied decoder weight is the word embedding, drawn once).
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 0.1 if name.endswith("bias") or name.endswith("beta") else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
            if "LayerNorm.weight" in name:
                p.add_(1.0)  # keep LN scales around 1 but distinct per element
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()

    model.save_pretrained(OUT, safe_serialization=True)
    tok.save_pretrained(OUT)

    # Loading check.
    m2, info = BertForMaskedLM.from_pretrained(OUT, output_loading_info=True)
    print("hf-tiny loading info:", info)
    if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
        sys.exit("unexpected loading info for hf-tiny")
    m2.eval()

    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.float()
        logits2 = m2(**batch).logits.float()
    assert torch.equal(logits, logits2), "reloaded model differs"

    fill = pipeline("fill-mask", model=OUT, tokenizer=OUT, top_k=5, device="cpu")
    fill_out = fill(TEXTS[2])
    fill_out = [{k: (float(v) if k == "score" else v) for k, v in d.items()} for d in fill_out]

    record = {
        "texts": TEXTS,
        "input_ids": batch["input_ids"].tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "token_type_ids": batch["token_type_ids"].tolist(),
        "logits": logits.tolist(),
        "fill_mask": fill_out,
        "special_token_ids": {t: tok.convert_tokens_to_ids(t) for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
        },
    }
    with open(os.path.join(OUT, "logits.json"), "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.write("\n")

    # Legacy layout.
    sd = load_file(os.path.join(OUT, "model.safetensors"))
    legacy = {}
    for k, v in sd.items():
        nk = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[nk] = v.clone().contiguous()
    word = sd["bert.embeddings.word_embeddings.weight"]
    legacy["cls.predictions.decoder.weight"] = word.clone().contiguous()
    legacy["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].clone().contiguous()
    save_file(legacy, os.path.join(LEGACY, "model.safetensors"), metadata={"format": "pt"})
    for fn in ["config.json", "vocab.txt"]:
        shutil.copyfile(os.path.join(OUT, fn), os.path.join(LEGACY, fn))

    versions = record["versions"]
    ver_line = ", ".join(f"{k} {v}" for k, v in versions.items())
    special = ", ".join(f"{k}={v}" for k, v in record["special_token_ids"].items())
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# hf-tiny: a tiny random Hugging Face BertForMaskedLM

Made by `python3 scripts/make_hf_fixture.py` (run from the project root) with {ver_line}.
Seed {SEED}; CPU; float32.

- Config: vocab 99, hidden 32, 2 layers, 4 heads, intermediate 37, max positions 64,
  2 token types, gelu, layer_norm_eps 1e-12. Dropout 0.1 is in config.json but the model was
  evaluated in eval mode.
- Every parameter (LayerNorm weights/biases and `cls.predictions.bias` included) was re-drawn:
  weights N(0, 0.5) (LayerNorm weights 1 + N(0, 0.5)), biases N(0, 0.1). The decoder is tied to
  the word embeddings (standard HF tying), so `cls.predictions.decoder.weight` is not stored.
- vocab.txt has 99 WordPiece lines; special ids are NOT 1..4: {special}.
- `logits.json`: the 4 `texts` tokenized together with `padding=True` (`input_ids`,
  `attention_mask`, `token_type_ids`), `logits` = `model(**batch).logits` under
  `torch.no_grad()` (shape [4][seq][99]), and `fill_mask` = transformers'
  `pipeline("fill-mask", top_k=5)` output for texts[2]; also `special_token_ids` and `versions`.
- vocab.txt is written by the script itself: transformers 5's `save_pretrained` writes only
  tokenizer.json + tokenizer_config.json (no vocab.txt, no special_tokens_map.json), and its
  config.json says `"dtype"` where transformers 4 wrote `"torch_dtype"`.
""")
    with open(os.path.join(LEGACY, "README.md"), "w", encoding="utf-8") as f:
        f.write(f"""# hf-tiny-legacy: hf-tiny's weights in an older checkpoint layout

Made by `python3 scripts/make_hf_fixture.py` together with ../hf-tiny ({ver_line}).

Same weights, config.json and vocab.txt as ../hf-tiny, but in model.safetensors:
- `LayerNorm.weight`/`LayerNorm.bias` keys are renamed `LayerNorm.gamma`/`LayerNorm.beta`;
- `cls.predictions.decoder.weight` (= word embeddings) and `cls.predictions.decoder.bias`
  (= `cls.predictions.bias`) are stored explicitly;
- the `bert.` prefix is kept.
There is no tokenizer.json: an importer must build the tokenizer from vocab.txt.
Expected outputs: use ../hf-tiny/logits.json.
""")

    total = 0
    for d in (OUT, LEGACY):
        for fn in sorted(os.listdir(d)):
            size = os.path.getsize(os.path.join(d, fn))
            total += size
            print(f"{d}/{fn}: {size} bytes")
    print(f"total {total} bytes; special ids {record['special_token_ids']}")


if __name__ == "__main__":
    main()

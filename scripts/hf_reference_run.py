#!/usr/bin/env python3
"""Trains Hugging Face's BertForMaskedLM with the shapes and hyper-parameters of a masklm config,
on the same tokenizer and packed rows, and reports held-out masked-token accuracy: a reference
for "is masklm's accuracy normal for this config?".

    python3 scripts/hf_reference_run.py [--config configs/default.toml] [--steps N] [--threads T]

The tokenizer is the config's tokenizer.path (train it first, e.g. with `masklm train` or
`masklm tokenizer`). Rows: every line tokenized without specials, concatenated, cut into blocks of
seq_len - 2 wrapped in [CLS] ... [SEP] (HF group_texts; masklm's `packed`). Corruption:
DataCollatorForLanguageModeling (15%, 80/10/10). Optimizer: torch AdamW (0.9, 0.999, eps 1e-6,
weight decay 0.01 except biases and LayerNorm), linear warmup then linear decay (HF
get_linear_schedule_with_warmup), global-norm clipping at max_grad_norm. Evaluation: the
validation rows corrupted once at 15% with a fixed seed; accuracy and loss over selected positions.
Prints one JSON line per evaluation.
"""
import argparse
import json
import math
import os
import random
import sys
import time
import tomllib

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def packed_rows(tok, paths, seq_len, cls, sep):
    ids = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            lines = [l.strip() for l in f if l.strip()]
        for enc in tok.encode_batch(lines, add_special_tokens=False):
            ids.extend(enc.ids)
    body = seq_len - 2
    return [[cls] + ids[i:i + body] + [sep] for i in range(0, len(ids) - body + 1, body)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/default.toml")
    ap.add_argument("--steps", type=int, default=None, help="default: train.steps of the config")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="override train.learning_rate")
    args = ap.parse_args()

    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              PreTrainedTokenizerFast, get_linear_schedule_with_warmup)

    transformers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    seed = t.get("seed", 42)
    torch.manual_seed(seed)
    random.seed(seed)
    steps = args.steps or t.get("steps", 1000)
    lr = args.lr or t.get("learning_rate", 1e-4)
    seq_len, batch = d.get("seq_len", 128), t.get("batch_size", 32)

    tok_path = cfg["tokenizer"]["path"]
    tok = Tokenizer.from_file(tok_path)
    sp = {s: tok.token_to_id(s) for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    train = packed_rows(tok, d["train"], seq_len, sp["[CLS]"], sp["[SEP]"])
    valid = packed_rows(tok, d["valid"], seq_len, sp["[CLS]"], sp["[SEP]"])
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=tok_path, mask_token="[MASK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    collator = DataCollatorForLanguageModeling(tokenizer=hf_tok, mlm=True, mlm_probability=d.get("mask_prob", 0.15))

    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=m["hidden_size"],
                        num_hidden_layers=m["num_hidden_layers"], num_attention_heads=m["num_attention_heads"],
                        intermediate_size=m["intermediate_size"],
                        max_position_embeddings=m.get("max_position_embeddings", 512),
                        hidden_dropout_prob=m.get("hidden_dropout_prob", 0.1),
                        attention_probs_dropout_prob=m.get("attention_probs_dropout_prob", 0.1),
                        layer_norm_eps=m.get("layer_norm_eps", 1e-12),
                        initializer_range=m.get("initializer_range", 0.02), pad_token_id=sp["[PAD]"])
    model = BertForMaskedLM(config)
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.get("weight_decay", 0.01)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=1e-6)
    sched = get_linear_schedule_with_warmup(opt, t.get("warmup_steps", 100), steps)

    # Fixed evaluation corruption: one pass over the validation rows with a fixed generator.
    g = torch.random.get_rng_state()
    torch.manual_seed(1234)
    eval_batches = [collator([{"input_ids": r} for r in valid[i:i + batch]]) for i in range(0, len(valid), batch)]
    torch.random.set_rng_state(g)

    def evaluate():
        model.eval()
        correct = total = 0
        loss_sum = 0.0
        with torch.no_grad():
            for b in eval_batches:
                logits = model(input_ids=b["input_ids"]).logits
                sel = b["labels"] != -100
                lg, lb = logits[sel], b["labels"][sel]
                loss_sum += torch.nn.functional.cross_entropy(lg, lb, reduction="sum").item()
                correct += (lg.argmax(-1) == lb).sum().item()
                total += lb.numel()
        model.train()
        return correct / total, loss_sum / total

    order = list(range(len(train)))
    random.shuffle(order)
    cursor, t0 = 0, time.time()
    model.train()
    for step in range(steps):
        rows = []
        for _ in range(batch):
            if cursor == len(order):
                random.shuffle(order)
                cursor = 0
            rows.append({"input_ids": train[order[cursor]]})
            cursor += 1
        b = collator(rows)
        loss = model(input_ids=b["input_ids"], labels=b["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.get("max_grad_norm", 1.0))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            acc, vloss = evaluate()
            print(json.dumps({"step": step + 1, "loss": loss.item(), "eval_accuracy": acc, "eval_loss": vloss,
                              "eval_perplexity": math.exp(vloss), "elapsed_s": time.time() - t0}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch / transformers side of masklm's training-throughput comparison.

    python3 bench/compare_pytorch.py --tokenizer PATH/tokenizer.json --corpus FILE [FILE...] \
        --vocab-size 8192 --hidden-size 256 --layers 4 --heads 4 --intermediate-size 1024 \
        --seq-len 128 --batch-size 32 --steps N --warmup W [--threads T] [--device cpu|cuda]
        [--mode f32|tf32|bf16]

The corpus is tokenized with the `tokenizers` library (no special tokens), concatenated and packed
into rows of `[CLS] + (seq_len - 2) tokens + [SEP]`. The model is `BertForMaskedLM(BertConfig(...))`
with vocab size = the tokenizer's vocab size and max_position_embeddings = max(512, seq_len);
masking is `DataCollatorForLanguageModeling(mlm_probability=0.15)` (80/10/10); the optimizer is
`torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)`.

Each timed step is collate + forward + loss + backward + global-norm clipping at 1.0 (as HF's
Trainer and masklm) + optimizer.step + zero_grad; the first
W steps are warm-up and not timed. `--mode` is the precision, as HF's Trainer flags set it: f32
(default), tf32 (f32 with TF32 matmuls, `torch.backends.cuda.matmul.allow_tf32`) or bf16
(`torch.autocast(dtype=torch.bfloat16)` around forward and loss, f32 master weights, as `--bf16`).
Prints ONE JSON object to stdout:
  {"tokens_per_sec", "sec_per_step", "first_step_s", "peak_rss_mb", "backend": "pytorch", "mode",
   "torch", "transformers", "threads", "device", "steps", "warmup", "seconds", "final_loss",
   "config": {...}} (+ "peak_cuda_mb", "gpu" on CUDA)
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--corpus", required=True, nargs="+", help="text file(s), one document/paragraph per line")
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="expected vocab size; the model always uses the tokenizer's (a mismatch is reported)")
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate-size", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(T)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["f32", "tf32", "bf16"], default="f32",
                    help="precision: f32, tf32 matmuls, or bf16 autocast")
    args = ap.parse_args()
    if args.seq_len < 3 or args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        ap.error("need seq_len >= 3, steps >= 1, warmup >= 0, batch_size >= 1")

    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import (BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling,
                              PreTrainedTokenizerFast)

    transformers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.mode == "tf32"
    torch.backends.cudnn.allow_tf32 = args.mode == "tf32"
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=args.mode == "bf16")

    # --- data: tokenize only as much as the run needs, pack into [CLS] ... [SEP] rows ---
    tok = Tokenizer.from_file(args.tokenizer)
    special = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")}
    missing = [t for t, i in special.items() if i is None]
    if missing:
        sys.exit(f"tokenizer lacks special tokens {missing}")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    if args.vocab_size is not None and args.vocab_size != vocab_size:
        log(f"note: --vocab-size {args.vocab_size} but the tokenizer has {vocab_size}; using {vocab_size}")

    body = args.seq_len - 2
    rows_needed = (args.steps + args.warmup) * args.batch_size
    tokens_needed = rows_needed * body
    stream = []
    chunk = []

    def flush():
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            stream.extend(enc.ids)
        chunk.clear()

    for path in args.corpus:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    chunk.append(line)
                if len(chunk) >= 1000:
                    flush()
                    if len(stream) >= tokens_needed:
                        break
        if len(stream) >= tokens_needed:
            break
    if chunk:
        flush()
    n_rows = len(stream) // body
    if n_rows == 0:
        sys.exit("corpus too small for one row")
    rows = [[special["[CLS]"]] + stream[i * body:(i + 1) * body] + [special["[SEP]"]] for i in range(n_rows)]
    if n_rows < rows_needed:
        log(f"note: corpus gives {n_rows} rows, {rows_needed} needed; cycling")
    del stream

    hf_tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, mask_token="[MASK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    collator = DataCollatorForLanguageModeling(tokenizer=hf_tok, mlm=True, mlm_probability=0.15)

    # --- model and optimizer ---
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=max(512, args.seq_len),
        type_vocab_size=2,
        pad_token_id=special["[PAD]"],
    )
    model = BertForMaskedLM(config).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    n_params = sum(p.numel() for p in model.parameters())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    cursor = 0
    loss_val = None
    t0 = None
    first_step_s = None
    t_start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == 1:
            sync()
            first_step_s = time.perf_counter() - t_start
        if step == args.warmup:
            sync()
            t0 = time.perf_counter()
        examples = []
        for _ in range(args.batch_size):
            examples.append({"input_ids": rows[cursor % n_rows]})
            cursor += 1
        batch = collator(examples)
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with autocast:
            out = model(input_ids=input_ids, labels=labels)
        out.loss.backward()
        # As HF's Trainer (max_grad_norm=1.0) and masklm (train.max_grad_norm) do.
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == args.warmup + args.steps - 1:
            loss_val = out.loss.item()  # syncs
    sync()
    seconds = time.perf_counter() - t0

    tokens = args.batch_size * args.seq_len * args.steps
    result = {
        "tokens_per_sec": tokens / seconds,
        "sec_per_step": seconds / args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_step_s": first_step_s,
        "backend": "pytorch",
        "mode": args.mode,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "steps": args.steps,
        "warmup": args.warmup,
        "seconds": seconds,
        "final_loss": loss_val,
        "parameters": n_params,
        "config": {
            "vocab_size": vocab_size,
            "hidden_size": args.hidden_size,
            "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads,
            "intermediate_size": args.intermediate_size,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "max_position_embeddings": config.max_position_embeddings,
            "hidden_dropout_prob": config.hidden_dropout_prob,
            "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        },
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

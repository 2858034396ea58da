#!/usr/bin/env python3
"""Alternates `masklm bench` and `bench/compare_pytorch.py` on the same shapes, corpus and
tokenizer, and prints each side's median tokens/s and the median ratio masklm / PyTorch.

    python3 bench/compare.py [--rounds 3] [--steps 10] [--warmup 2] [--config configs/bench-mini.toml]
                             [--masklm PATH] [--set key=value ...]

Run from the project root after `cargo build --release`. The masklm binary defaults to
$CARGO_TARGET_DIR/release/masklm, else target/release/masklm. The shapes, corpus and tokenizer
come from `masklm bench --json` of the first round (its tokenizer is trained on first use), so
both sides always measure the same thing. Rounds alternate masklm, PyTorch, masklm, PyTorch…
so that a noisy neighbour hurts both sides alike. Prints one JSON object at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tomllib


def masklm_binary(explicit):
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "release", "masklm")


def run_json(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--config", default="configs/bench-mini.toml")
    ap.add_argument("--masklm", default=None, help="path of the masklm binary")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="masklm --set key=value")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for PyTorch")
    args = ap.parse_args()

    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    tokenizer = cfg["tokenizer"]["path"]
    corpus = cfg["data"]["train"]
    for s in args.sets:
        key, _, value = s.partition("=")
        # A --set value is TOML, as masklm reads it.
        if key == "tokenizer.path":
            tokenizer = tomllib.loads(f"v = {value}")["v"]
        elif key == "data.train":
            corpus = tomllib.loads(f"v = {value}")["v"]

    sets = [a for s in args.sets for a in ("--set", s)]
    binary = masklm_binary(args.masklm)
    # The tokenizer and token stores first, so that no timed round pays for them.
    subprocess.run([binary, "data", "prepare", "--config", args.config, *sets], check=True,
                   stdout=subprocess.DEVNULL)
    ours_cmd = [binary, "bench", "--config", args.config, "--json",
                "--steps", str(args.steps), "--warmup", str(args.warmup), *sets]

    ours, theirs = [], []
    for r in range(args.rounds):
        o = run_json(ours_cmd)
        ours.append(o)
        c = o["config"]
        torch_cmd = [sys.executable, "bench/compare_pytorch.py", "--tokenizer", tokenizer,
                     "--corpus", *corpus, "--vocab-size", str(c["vocab_size"]),
                     "--hidden-size", str(c["hidden_size"]), "--layers", str(c["num_hidden_layers"]),
                     "--heads", str(c["num_attention_heads"]),
                     "--intermediate-size", str(c["intermediate_size"]),
                     "--seq-len", str(c["seq_len"]), "--batch-size", str(c["batch_size"]),
                     "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.threads:
            torch_cmd += ["--threads", str(args.threads)]
        t = run_json(torch_cmd)
        theirs.append(t)
        print(f"round {r + 1}: masklm {o['tokens_per_sec']:.0f} tok/s, "
              f"pytorch {t['tokens_per_sec']:.0f} tok/s, ratio {o['tokens_per_sec'] / t['tokens_per_sec']:.3f}",
              file=sys.stderr, flush=True)

    ratios = [o["tokens_per_sec"] / t["tokens_per_sec"] for o, t in zip(ours, theirs)]
    summary = {
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "config": ours[0]["config"],
        "masklm_tokens_per_sec": [o["tokens_per_sec"] for o in ours],
        "pytorch_tokens_per_sec": [t["tokens_per_sec"] for t in theirs],
        "masklm_median": statistics.median(o["tokens_per_sec"] for o in ours),
        "pytorch_median": statistics.median(t["tokens_per_sec"] for t in theirs),
        "median_ratio": statistics.median(ratios),
        "masklm_peak_rss_mb": max(o["peak_rss_mb"] for o in ours),
        "pytorch_peak_rss_mb": max(t["peak_rss_mb"] for t in theirs),
        "masklm_data_share": statistics.median(o["data_share"] for o in ours),
        "torch": theirs[0].get("torch"),
        "transformers": theirs[0].get("transformers"),
        "pytorch_threads": theirs[0].get("threads"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

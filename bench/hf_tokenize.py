#!/usr/bin/env python3
"""HF `tokenizers` alone from Python, for the comparison with `masklm data prepare` (BENCHMARKS.md,
"Corpora larger than memory"): MB/s of `encode_batch_fast` over a text file's non-blank lines.

    head -c 20000000 /tmp/bigc/text/part-00.txt > /tmp/s20.txt
    RAYON_NUM_THREADS=1 python3 bench/hf_tokenize.py checkpoints/bench-mini/tokenizer.json /tmp/s20.txt

Prints MB/s (over the file's bytes) and the token count, which must equal the store's.
"""
import sys
import time

import tokenizers


def main():
    tok_path, text_path = sys.argv[1:3]
    tok = tokenizers.Tokenizer.from_file(tok_path)
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    lines = [l for l in text.split("\n") if l.strip()]
    start = time.time()
    n = 0
    for i in range(0, len(lines), 16384):
        enc = tok.encode_batch_fast(lines[i : i + 16384], add_special_tokens=False)
        n += sum(len(e.ids) for e in enc)
    secs = time.time() - start
    mb = len(text.encode("utf-8")) / 1e6
    print(f"tokenizers {tokenizers.__version__}: {mb / secs:.2f} MB/s, {n} tokens")


if __name__ == "__main__":
    main()

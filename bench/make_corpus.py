#!/usr/bin/env python3
"""Writes a large text corpus from the shipped corpora, for the token-store measurements.

    python3 bench/make_corpus.py --gb 8 --out /tmp/bigcorpus

Writes OUT/part-00.txt, part-01.txt, ... of 1 GB (10^9 bytes) each: the documents
(blank-line-separated paragraphs) of corpora/tinystories and corpora/wikitext-2-raw, each part
a different seeded shuffle of them, repeated until the part is full. Not committed: it is
generated. BENCHMARKS.md ("Corpora larger than memory") uses it.
"""
import argparse
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = [
    "corpora/tinystories/tinystories-train-first1000.txt",
    "corpora/tinystories/tinystories-validation-head.txt",
    "corpora/wikitext-2-raw/wiki.valid.raw",
    "corpora/wikitext-2-raw/wiki.test.raw",
]
PART = 10**9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=int, required=True, help="parts of 1 GB to write")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    a = ap.parse_args()
    docs = []
    for s in SOURCES:
        text = (ROOT / s).read_text(encoding="utf-8")
        docs += [d.strip("\n") + "\n\n" for d in text.split("\n\n") if d.strip()]
    a.out.mkdir(parents=True, exist_ok=True)
    for part in range(a.gb):
        rng = random.Random(part)
        path = a.out / f"part-{part:02d}.txt"
        written = 0
        with open(path, "w", encoding="utf-8") as f:
            while written < PART:
                rng.shuffle(docs)
                chunk = "".join(docs)
                chunk = chunk[: PART - written] if written + len(chunk) > PART else chunk
                f.write(chunk)
                written += len(chunk.encode("utf-8"))
        print(f"{path}: {written} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Records how Hugging Face `tokenizers` encodes a few sentences with a tokenizer that masklm wrote.

Run by hand where `pip install tokenizers` works, from the project root:

    cargo run --release -- tokenizer --corpus corpora/tinystories/tinystories-validation-head.txt \
        --vocab-size 500 --out tests/fixtures/tokenizer/tokenizer.json --force
    python3 scripts/make_tokenizer_fixture.py

tests/it/tokenizer_fixture.rs then checks that masklm encodes the same sentences to the same ids,
and that masklm's training still writes exactly this tokenizer.json.
"""
import json
import tokenizers
from tokenizers import Tokenizer

DIR = "tests/fixtures/tokenizer"
SENTENCES = [
    "Once upon a time, Lily found a SHINY needle in her room!",
    "The café's naïve résumé: Ünïcödé accents are stripped when lowercasing.",
    "unbelievably-long-hyphenated-words and numbers like 3.14159 or 2,000,000",
    "你好 world, mixed scripts and an emoji 🙂 that is unknown",
    "  extra   spaces\tand\ttabs\nand a newline  ",
    "",
]

tok = Tokenizer.from_file(f"{DIR}/tokenizer.json")
records = []
for s in SENTENCES:
    enc = tok.encode(s)
    records.append({"text": s, "ids": enc.ids, "tokens": enc.tokens})
with open(f"{DIR}/hf_encodings.json", "w", encoding="utf-8") as f:
    json.dump({"tokenizers_version": tokenizers.__version__, "encodings": records}, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"wrote {DIR}/hf_encodings.json with tokenizers {tokenizers.__version__}")

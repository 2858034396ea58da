#!/usr/bin/env python3
"""Checks that a Hugging Face model folder (e.g. one exported by masklm) loads in transformers.

    python3 scripts/check_hf_export.py HF_DIR [--text T]... [--logits]

Prints ONE JSON object to stdout:
  {"transformers": version, "torch": version, "model_class": name,
   "loading_info": {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"},
   "warnings": [log lines from transformers' loggers and Python warnings raised while loading],
   "tokenizer_class", "tokenizer_vocab_size", "special_token_ids",
   "tokens": [AutoTokenizer(HF_DIR)(text)["input_ids"] per --text],
   "fill_mask": [pipeline("fill-mask", top_k=5)(text) per --text that contains the mask token],
   "fill_mask_targets": [the same with targets=[each --target]] (only with --target; the
     pipeline's warnings on targets that are not tokens are not in "warnings"),
   "logits": [model(**tok(text)).logits[0] as [seq][vocab] per --text] (only with --logits)}
Runs offline (HF_HUB_OFFLINE=1). Exit code 0 if everything ran; if something raised, the JSON
object has "error" (and whatever was gathered before it) and the exit code is 2.
Everything else transformers prints (progress bars, log output) goes to stderr.
"""
import argparse
import contextlib
import json
import logging
import os
import re
import sys
import traceback
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ListHandler(logging.Handler):
    def __init__(self, sink):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record):
        try:
            self.sink.append(ANSI.sub("", f"{record.levelname}: {record.getMessage()}"))
        except Exception:  # never let logging break the check
            self.sink.append(f"{record.levelname}: {record.msg!r}")


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        items = [jsonable(v) for v in x]
        return sorted(items, key=str) if isinstance(x, set) else items
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, float):
        return x
    try:  # numpy / torch scalars
        return x.item()
    except Exception:
        return str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--logits", action="store_true", help="also print the logits of each --text")
    ap.add_argument("--target", action="append", default=[], help="fill-mask targets, once more")
    args = ap.parse_args()

    result = {"hf_dir": args.hf_dir}
    captured = []
    real_stdout = sys.stdout
    code = 0
    # Keep stdout for the single JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            import torch
            import transformers
            from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

            result["transformers"] = transformers.__version__
            result["torch"] = torch.__version__
            transformers.utils.logging.set_verbosity_warning()
            transformers.utils.logging.disable_progress_bar()
            handler = ListHandler(captured)
            tf_logger = logging.getLogger("transformers")
            tf_logger.addHandler(handler)

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, info = AutoModelForMaskedLM.from_pretrained(args.hf_dir, output_loading_info=True)
            for w in caught:
                captured.append(f"{w.category.__name__}: {w.message}")
            result["model_class"] = type(model).__name__
            result["loading_info"] = {
                k: jsonable(info.get(k, []))
                for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
            }
            result["warnings"] = captured

            tok = AutoTokenizer.from_pretrained(args.hf_dir)
            result["tokenizer_class"] = type(tok).__name__
            # transformers 5 silently builds a 5-token default BertTokenizer when the folder has
            # no tokenizer files, so report what was actually loaded.
            result["tokenizer_vocab_size"] = len(tok)
            result["special_token_ids"] = {
                t: tok.convert_tokens_to_ids(t)
                for t in (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token)
                if t is not None
            }
            result["tokens"] = [tok(t)["input_ids"] for t in args.text]

            model.eval()
            if args.logits:
                with torch.no_grad():
                    result["logits"] = [
                        model(**tok(t, return_tensors="pt")).logits[0].float().tolist() for t in args.text
                    ]

            mask = tok.mask_token or "[MASK]"
            masked = [t for t in args.text if mask in t]
            result["fill_mask"] = []
            if masked:
                fill = pipeline("fill-mask", model=model, tokenizer=tok, top_k=5, device="cpu")
                result["fill_mask"] = [jsonable(fill(t)) for t in masked]
            # Warnings logged after from_pretrained (tokenizer, pipeline) are kept too.
            result["warnings"] = list(captured)
            if masked and args.target:
                result["fill_mask_targets"] = [jsonable(fill(t, targets=args.target)) for t in masked]
        except Exception as e:  # report, don't crash without JSON
            result["error"] = f"{type(e).__name__}: {e}"
            result["traceback"] = traceback.format_exc()
            result.setdefault("warnings", captured)
            code = 2
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())

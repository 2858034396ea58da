#!/usr/bin/env python3
"""Which kernel CubeCL's autotune chose, per tuned problem, from its decisions file.

    python3 bench/autotune_summary.py profile.log.bert-base.vulkan-f16.autotune [--top 30]

The file is what `[autotune.decisions] file = "..."` in a `cubecl.toml` makes CubeCL write (one
JSON object per tuning decision; bench/gpu_compare.py asks for it with `--profile-out`). Prints
the decisions by the winner's median time, longest first: the problem (m×k·k×n and element
types for matrix products, the key's fields otherwise), the winning kernel, its time, the
runner-up, and how many candidates ran, were skipped or failed. Whether tensor cores are in use
reads off the winners' names (`cmma`/`mma` kernels against `unit`, `gemm`, `naive`).
"""
import argparse
import json


def nanos(d):
    return d["secs"] * 1e9 + d["nanos"]


def layout(x):
    """`Contiguous`, `HighlyPermuted`, or `MildlyPermuted` as `T` (transposed) / `B` (batch swap)."""
    if isinstance(x, dict):
        m = x.get("MildlyPermuted", {})
        return "Mildly(" + ("T" if m.get("transposed") else "") + ("B" if m.get("batch_swap") else "") + ")"
    return x


def describe(key):
    """A short name for a tuned problem."""
    k = key.get("matmul_key", key)
    if "definition" in k:
        d = k["definition"]
        el = lambda e: "/".join(str(v) for v in e.values()).lower()
        fused = f" fused({key['num_ops']} ops)" if "matmul_key" in key else ""
        return (f"matmul {d['m']}x{d['k']}·{d['k']}x{d['n']} {el(d['elem_lhs'])}→{el(d['elem_out'])} "
                f"{layout(d['matrix_layout_lhs'])}/{layout(d['matrix_layout_rhs'])}{fused}")
    return " ".join(f"{name}={value}" for name, value in key.items())[:90]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("decisions")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    rows = []
    for line in open(args.decisions, encoding="utf-8"):
        d = json.loads(line)
        ok = [r["outcome"]["Ok"] for r in d["results"] if "Ok" in r["outcome"]]
        skipped = sum("Skip" in r["outcome"].get("Err", {}) for r in d["results"])
        failed = len(d["results"]) - len(ok) - skipped
        ok.sort(key=lambda r: nanos(r["computation"]["median"]))
        win = next((r for r in ok if r["index"] == d["fastest_index"]), ok[0] if ok else None)
        second = next((r for r in ok if r is not win), None)
        rows.append((nanos(win["computation"]["median"]) if win else 0.0, describe(d["key"]),
                     win["name"] if win else "none ran", second, len(ok), skipped, failed))
    rows.sort(key=lambda r: -r[0])
    print(f"{len(rows)} decisions in {args.decisions}")
    print("| problem | winner | median µs | runner-up | ran / skipped / failed |")
    print("| --- | --- | ---: | --- | ---: |")
    for t, problem, winner, second, ran, skipped, failed in rows[:args.top]:
        runner = f"{second['name']} {nanos(second['computation']['median']) / 1e3:.1f}" if second else ""
        print(f"| {problem} | {winner} | {t / 1e3:.1f} | {runner} | {ran} / {skipped} / {failed} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where a GPU step's time goes, from CubeCL's profiling log.

CubeCL times every kernel when a `cubecl.toml` in the working folder asks for it:

    [profiling.logger]
    level = "full"
    file = "profile.log"

("basic" names kernels by a hash and leaves out the autotuned matrix products; "full" names them
by their type, matrix products included)
and prints a summary table (name, total duration, count) each time the host waits for the
device, which masklm does once per optimizer step. This sums the last `--tables` such tables
(the timed steps; the first ones hold compilation and autotuning) by kernel, named by the last
path segment of its type (`MatmulEntry`, `ElemwiseFuse`, `CopyKernel`), and prints them by
share of the time.

    python3 bench/gpu_profile.py profile.log [--tables 2] [--top 25]
"""
import argparse
import re
from collections import defaultdict

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(text):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def short(name):
    """`a::b::MatmulEntry<…>: …` → `MatmulEntry`; a hashed name (`CopyKernel_1bfd9506`) → `CopyKernel`."""
    head = re.split(r"[<:{ ]", name.split("<")[0].split("::")[-1] if "::" in name else name)[0]
    return head.split("_")[0] or name[:40]


def tables(lines):
    """The summary tables of the log, each a list of (name, seconds, count)."""
    out, rows, inside = [], [], False
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] == "Name":
            rows, inside = [], True
        elif inside and len(cells) == 4 and cells[0] == "Total":
            out.append(rows)
            inside = False
        elif inside and len(cells) == 4 and seconds(cells[1]) is not None:
            rows.append((short(cells[0]), seconds(cells[1]), int(cells[2])))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--tables", type=int, default=2, help="how many of the last summary tables to sum")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with open(args.log, encoding="utf-8", errors="replace") as f:
        found = tables(f)
    last = found[-args.tables:]
    total, count = defaultdict(float), defaultdict(int)
    for table in last:
        for name, secs, n in table:
            total[name] += secs
            count[name] += n
    whole = sum(total.values())
    sizes = ", ".join(f"{sum(n for _, _, n in t)} kernels {sum(s for _, s, _ in t) * 1e3:.1f} ms" for t in found[-6:])
    print(f"the last tables: {sizes}")
    print(f"{len(found)} summary tables; the last {len(last)}: {sum(count.values())} kernels, "
          f"{whole * 1e3:.1f} ms of kernel time")
    print("| share | ms | count | kernel |")
    print("| ---: | ---: | ---: | --- |")
    for name in sorted(total, key=total.get, reverse=True)[: args.top]:
        print(f"| {100 * total[name] / whole:.1f}% | {total[name] * 1e3:.2f} | {count[name]} | {name} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A/B of masklm builds: alternates `masklm bench` of two or more binaries round by round and
prints each one's median seconds per step. This is how each lever in BENCHMARKS.md was measured:
build the commit before the lever, copy its binary away, build the lever, then

    python3 bench/ab.py /tmp/masklm-before /tmp/masklm-after --rounds 5

An entry `PATH@KEY=VALUE+KEY=VALUE` runs PATH with those environment variables (for example
glibc's MALLOC_* tunables). Alternating matters: the shared host's speed drifts by 30% or more
over minutes, so only rounds run side by side compare.
"""

import argparse
import json
import os
import statistics
import subprocess


def run(entry, args):
    path, _, env_spec = entry.partition("@")
    env = dict(os.environ)
    for kv in filter(None, env_spec.split("+")):
        key, _, value = kv.partition("=")
        env[key] = value
    cmd = [path, "bench", "--config", args.config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+", help="masklm binaries (PATH or PATH@ENV=VALUE+...)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--config", default="configs/bench-mini.toml")
    args = ap.parse_args()
    times = {b: [] for b in args.binaries}
    for r in range(args.rounds):
        for b in args.binaries:
            j = run(b, args)
            times[b].append(j["sec_per_step"])
            print(f"round {r + 1}: {b}: {j['sec_per_step']:.3f} s/step, "
                  f"peak RSS {j['peak_rss_mb']:.0f} MB", flush=True)
    for b, t in times.items():
        print(f"{b}: median {statistics.median(t):.3f} s/step over {len(t)} rounds "
              f"{[round(x, 3) for x in t]}")


if __name__ == "__main__":
    main()

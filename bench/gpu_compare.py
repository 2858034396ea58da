#!/usr/bin/env python3
"""Both tools on one GPU, in one run: masklm `bench` on a GPU backend and transformers'
BertForMaskedLM (bench/compare_pytorch.py) in f32, tf32 and bf16 autocast, at bench-mini and
BERT-base shapes. Prints one markdown table (tokens/s, s/step, peak GPU memory, first-step time)
and a JSON object with every measurement. Builds nothing: give it a masklm binary.

    python3 bench/gpu_compare.py --masklm .device/masklm [--runs wgpu:f32,vulkan:f16]
        [--steps 15] [--warmup 4] [--shapes bench-mini,bert-base] [--modes f32,tf32,bf16]
        [--timeout 240] [--profile vulkan:f16 --profile-out profile.log] [--set key=value ...]

`--runs` lists masklm's runs as backend:precision (train.backend, train.precision); `--timeout`
stops any one run after that many seconds (reported as "timed out"), so that one slow
configuration cannot use up a device call. `--profile backend:precision` ends with one more masklm
run per shape (2 warm-up and 2 timed steps) with CubeCL's kernel profiling on (a `cubecl.toml` in
the repository root for the run's length), its log written to `--profile-out` and summed by
kernel by bench/gpu_profile.py. With `--profile-out`, every masklm run also writes CubeCL's
autotune decisions (which matmul and reduction kernels won, against which candidates) to
`<profile-out>.<shape>.<backend>-<precision>.autotune`; a run whose autotune cache was already
warm writes none. masklm's rows also give the operations and blocks burn's fusion processed per
step (bench's `fusion`; host work the GPU waits for when its kernels are short).

Shapes (rows of 128 tokens, dropout 0.1, AdamW, clipping at 1.0 on both sides):
  bench-mini  configs/bench-mini.toml, batch 32 (hidden 256, 4 layers, 4 heads, 1024)
  bert-base   configs/bench-mini.toml's corpus and tokenizer with BERT-base's [model], batch 128
Peak GPU memory is the largest `nvidia-smi --query-compute-apps` reading for the process,
sampled every 0.2 s (the same measure for both tools; "n/a" without nvidia-smi); masklm's rows
also give what CubeCL's memory pools hold after the timed steps (bench's `gpu_reserved_mb`). `--device cpu`
runs the same driver on the CPU (masklm flex, or the `--runs` given, against PyTorch f32), to
check the script itself: with `--runs vulkan:f16` on Mesa's lavapipe, the GPU path too.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BERT_BASE = ["model.hidden_size=768", "model.num_hidden_layers=12", "model.num_attention_heads=12",
             "model.intermediate_size=3072", "train.batch_size=128"]
SHAPES = {"bench-mini": [], "bert-base": BERT_BASE}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class GpuMemory:
    """Peak `used_memory` (MiB) of one process id, polled from nvidia-smi on a thread."""

    def __init__(self, pid):
        self.pid, self.peak, self.ok = str(pid), None, True
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                self.ok = False
                return
            for line in out.splitlines():
                pid, _, mb = line.partition(",")
                if pid.strip() == self.pid and mb.strip().isdigit():
                    self.peak = max(self.peak or 0, int(mb))
            time.sleep(0.2)

    def done(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def run(cmd, timeout, env=None):
    """Runs `cmd`, returns (its last stdout line as JSON, peak GPU MiB, wall seconds)."""
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    mem = GpuMemory(p.pid)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        mem.done()
        log(f"timed out after {timeout} s")
        return "timeout", None, time.perf_counter() - t0
    peak = mem.done()
    wall = time.perf_counter() - t0
    if p.returncode == 0:
        try:
            x = json.loads(out.strip().splitlines()[-1])
            log(f"-> {x['tokens_per_sec']:,.0f} tokens/s, {x['sec_per_step']:.3f} s/step, first step "
                f"{x.get('first_step_s', float('nan')):.1f} s, peak {peak} MiB, wall {wall:.0f} s")
        except (ValueError, KeyError, IndexError):
            pass
    if p.returncode != 0:
        log(f"exit {p.returncode}")
        return None, peak, wall
    return json.loads(out.strip().splitlines()[-1]), peak, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masklm", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "masklm"))
    ap.add_argument("--runs", help="masklm runs as backend:precision, comma-separated "
                    "(default wgpu:f32,vulkan:f16; flex:f32 with --device cpu)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds allowed to one run")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to check the script")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--shapes", default="bench-mini,bert-base")
    ap.add_argument("--modes", default="f32,tf32,bf16", help="PyTorch precisions")
    ap.add_argument("--profile", help="backend:precision of a profiled masklm run per shape")
    ap.add_argument("--profile-out", default="profile.log")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra masklm --set key=value")
    args = ap.parse_args()
    default_runs = "flex:f32" if args.device == "cpu" else "wgpu:f32,vulkan:f16"
    runs = [r.split(":") for r in (args.runs or default_runs).split(",")]
    modes = args.modes.split(",") if args.device != "cpu" else ["f32"]

    results = []
    for shape in args.shapes.split(","):
        # The PyTorch side needs the shapes and the vocabulary only: the config's, known here.
        c = None
        for backend, precision in runs:
            sets = SHAPES[shape] + [f"train.backend={backend}", f"train.precision={precision}",
                                    "model.hidden_dropout_prob=0.1",
                                    "model.attention_probs_dropout_prob=0.1"] + args.sets
            cmd = [args.masklm, "bench", "--config", "configs/bench-mini.toml", "--json",
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
            for s in sets:
                cmd += ["--set", s]
            toml = os.path.join(ROOT, "cubecl.toml")
            if args.profile:
                with open(toml, "w") as f:
                    path = os.path.abspath(f"{args.profile_out}.{shape}.{backend}-{precision}.autotune")
                    f.write(f'[autotune.decisions]\nfile = "{path}"\n')
            try:
                ours, peak, wall = run(cmd, args.timeout)
            finally:
                if args.profile:
                    os.remove(toml)
            results.append({"shape": shape, "tool": f"masklm {backend} {precision}", "result": ours,
                            "peak_gpu_mb": peak, "wall_s": wall})
            if isinstance(ours, dict):
                c = c or ours["config"]
        if c is None:
            continue
        tok = os.path.join(ROOT, "checkpoints/bench-mini/tokenizer.json")
        for mode in modes:
            cmd = [sys.executable, os.path.join(HERE, "compare_pytorch.py"), "--tokenizer", tok,
                   "--corpus", "corpora/tinystories/tinystories-train-first1000.txt",
                   "corpora/wikitext-2-raw/wiki.valid.raw",
                   "--hidden-size", str(c["hidden_size"]), "--layers", str(c["num_hidden_layers"]),
                   "--heads", str(c["num_attention_heads"]),
                   "--intermediate-size", str(c["intermediate_size"]), "--seq-len", str(c["seq_len"]),
                   "--batch-size", str(c["batch_size"]), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--device", args.device, "--mode", mode]
            theirs, peak, wall = run(cmd, args.timeout)
            results.append({"shape": shape, "tool": f"pytorch {mode}", "result": theirs,
                            "peak_gpu_mb": peak, "wall_s": wall})

    # The last loss: masklm's runs of one shape train the same batches from the same seed, so
    # their losses should agree to the precision's rounding (a backend that computes wrongly
    # shows here first); PyTorch's draws other masks and weights.
    print("| shapes | tool | tokens/s | s/step | peak GPU MiB | CubeCL pools MiB | first step s | wall s "
          "| fusion ops / blocks a step | last loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        x, shape = r["result"], r["shape"]
        if not isinstance(x, dict):
            print(f"| {shape} | {r['tool']} | {'timed out' if x == 'timeout' else 'failed'} | | | | | "
                  f"{r['wall_s']:.0f} | | |")
            continue
        mem = r["peak_gpu_mb"] if r["peak_gpu_mb"] is not None else "n/a"
        first = x.get("first_step_s")
        first = f"{first:.1f}" if isinstance(first, (int, float)) else "n/a"
        pools = x.get("gpu_reserved_mb")
        pools = f"{pools:,.0f}" if isinstance(pools, (int, float)) else ""
        fusion = x.get("fusion")
        fusion = f"{fusion['operations']:,.0f} / {fusion['blocks']:,.0f}" if fusion else ""
        loss = x.get("last_loss")
        loss = f"{loss:.4f}" if isinstance(loss, (int, float)) else ""
        print(f"| {shape} | {r['tool']} | {x['tokens_per_sec']:,.0f} | {x['sec_per_step']:.3f} "
              f"| {mem} | {pools} | {first} | {r['wall_s']:.0f} | {fusion} | {loss} |")
    # Each masklm run against each PyTorch mode on the same shapes: masklm tokens/s ÷ PyTorch's.
    print()
    print("| shapes | masklm run | " + " | ".join(f"÷ pytorch {m}" for m in modes) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in modes) + " |")
    for shape in args.shapes.split(","):
        rows = [r for r in results if r["shape"] == shape and isinstance(r["result"], dict)]
        torch = {r["tool"]: r["result"]["tokens_per_sec"] for r in rows if r["tool"].startswith("pytorch")}
        for r in rows:
            if r["tool"].startswith("masklm"):
                ours = r["result"]["tokens_per_sec"]
                cells = [f"{ours / torch[f'pytorch {m}']:.2f}" if f"pytorch {m}" in torch else "" for m in modes]
                print(f"| {shape} | {r['tool']} | " + " | ".join(cells) + " |")
    print(json.dumps({"steps": args.steps, "warmup": args.warmup, "results": results}), flush=True)

    if args.profile:
        backend, precision = args.profile.split(":")
        toml = os.path.join(ROOT, "cubecl.toml")
        for shape in args.shapes.split(","):
            log_path = os.path.abspath(f"{args.profile_out}.{shape}")
            with open(toml, "w") as f:
                # "full": the autotuned matrix products are timed too ("basic" leaves them out).
                f.write(f'[profiling.logger]\nlevel = "full"\nfile = "{log_path}"\n')
            try:
                cmd = [args.masklm, "bench", "--config", "configs/bench-mini.toml", "--json",
                       "--steps", "2", "--warmup", "2"]
                for s in SHAPES[shape] + [f"train.backend={backend}", f"train.precision={precision}"] + args.sets:
                    cmd += ["--set", s]
                run(cmd, args.timeout)
            finally:
                os.remove(toml)
            if os.path.exists(log_path):
                print(f"\nprofile: {shape}, masklm {backend} {precision}", flush=True)
                subprocess.run([sys.executable, os.path.join(HERE, "gpu_profile.py"), log_path,
                                "--tables", "4"])
        # What autotune chose in each masklm run that tuned (a warm cache tunes nothing).
        for shape in args.shapes.split(","):
            for backend, precision in runs:
                path = os.path.abspath(f"{args.profile_out}.{shape}.{backend}-{precision}.autotune")
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    print(f"\nautotune: {shape}, masklm {backend} {precision}", flush=True)
                    subprocess.run([sys.executable, os.path.join(HERE, "autotune_summary.py"), path,
                                    "--top", "25"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Packs the CUDA kernels a bench/fake_cuda.sh run compiled, for a device call.

    python3 bench/ptx_cache.py [--from DB] [--out .device/environment.tar.xz]

NVRTC compiles each CUDA kernel when it is first launched, autotune candidates included; on the
2-core machine the first BERT-base step in bf16 took minutes of it, time a device call cannot
spare. bench/fake_cuda.sh runs the same binary against a stand-in driver and keeps the PTX in
CubeCL's cache (`masklm` turns `compilation.cache` on for `cuda`). This copies that cache's PTX
namespaces (`cuda/…`, `cuda-second-line/…`) into a fresh copy of CubeCL's database and drops
everything else: the autotune choices and throughput probes there were made on fake timings.
bench/gpu_device.sh unpacks the result into target/environment/ on the device.

The PTX is keyed by kernel, GPU architecture (sm_90 for the H100/H200) and the binary's build id,
so it serves only the binary it was made with: run this after packing `.device/masklm.xz` from the
same build.
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

KEEP = ("cuda/", "cuda-second-line/")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    tmp = os.environ.get("TMPDIR", "/tmp")
    ap.add_argument("--from", dest="src",
                    default=os.path.join(tmp, "masklm-fake-cuda/target/environment/default.db"))
    ap.add_argument("--out", default=".device/environment.tar.xz")
    args = ap.parse_args()
    if not os.path.isfile(args.src):
        sys.exit(f"error: no CubeCL database at {args.src}; run bench/fake_cuda.sh first")

    with tempfile.TemporaryDirectory() as work:
        env = os.path.join(work, "environment")
        os.makedirs(env)
        db = os.path.join(env, "default.db")
        # SQLite's backup API reads the write-ahead log too, which copying the file would miss.
        with sqlite3.connect(f"file:{args.src}?mode=ro", uri=True) as src, sqlite3.connect(db) as dst:
            src.backup(dst)
        con = sqlite3.connect(db)
        ours = "(" + " or ".join("namespace like ?" for _ in KEEP) + ")"
        prefixes = [k + "%" for k in KEEP]
        kept = con.execute("select count(*), coalesce(sum(length(value)), 0) from entries where "
                           + ours, prefixes).fetchone()
        con.execute("delete from entries where not " + ours, prefixes)
        con.commit()
        con.execute("vacuum")
        con.close()
        if kept[0] == 0:
            sys.exit(f"error: {args.src} holds no compiled CUDA kernel (was `compilation.cache` on?)")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        part = args.out + ".part"
        subprocess.run(["tar", "-cJf", part, "-C", work, "environment"], check=True)
        shutil.move(part, args.out)
    print(f"{args.out}: {kept[0]} entries, {kept[1] / 1e6:.1f} MB of PTX before compression, "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB packed")


if __name__ == "__main__":
    main()

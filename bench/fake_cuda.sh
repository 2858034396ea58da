#!/usr/bin/env bash
# `train.backend = "cuda"` without a GPU: masklm's CUDA path against a stand-in for NVIDIA's driver
# (bench/fake_cuda/fake_cuda.c) and the real NVRTC, so what a device call would find first is found
# here (issue 14):
#   - every kernel a step launches is compiled by NVRTC 13.0 for an H100 (sm_90a) with the CUDA
#     headers the device script carries; a kernel NVRTC refuses stops the run with its log;
#   - the host's seconds per step with launches that cost nothing: the floor under the step time
#     on a real GPU (if PyTorch's step is shorter, masklm's step is host-bound there);
#   - the kernel launches per step, by kernel (FAKE_CUDA_REPORT, a JSON file).
# No kernel runs: losses, norms and timings of kernels are meaningless (the loss reads 0).
#
#   bash bench/fake_cuda.sh NAME [masklm bench options]
#   FAKE_CUDA_SUBCOMMAND=eval bash bench/fake_cuda.sh NAME [masklm eval options]   (another one)
#   e.g. bash bench/fake_cuda.sh bert-bf16 --config configs/bench-mini.toml --set train.backend=cuda \
#          --set train.precision=bf16 --set model.hidden_size=768 ... --steps 5 --warmup 2 --json
#
# Writes target/fake_cuda/NAME.log (masklm's output) and NAME.json (the driver's counts). Needs gcc,
# pip (it downloads NVRTC and the headers once, 92 MB, into target/fake_cuda/) and a built
# target/release/masklm (target/ is $CARGO_TARGET_DIR when set). It runs in
# ${TMPDIR:-/tmp}/masklm-fake-cuda/, outside any Cargo project, so CubeCL's kernel and autotune
# cache (that folder's target/environment/) is kept apart from the real one: the PTX in it is
# real, the autotune choices were made on fake timings and must never reach a device
# (bench/ptx_cache.py packs the PTX alone for bench/gpu_device.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
name=${1:?usage: bash bench/fake_cuda.sh NAME [masklm bench options]}
shift
target=${CARGO_TARGET_DIR:-$root/target}
dir=$target/fake_cuda
run=${TMPDIR:-/tmp}/masklm-fake-cuda
mkdir -p "$dir/lib" "$run"

gcc -O2 -shared -fPIC -Wall -Wextra -Werror -o "$dir/lib/libcuda.so.1" bench/fake_cuda/fake_cuda.c

# The same versions as bench/gpu_device.sh's headers, and the NVRTC of PyTorch's cu13 wheels.
if [ ! -f "$dir/cu13/lib/libnvrtc.so.13" ] || [ ! -d "$dir/cu13/include/crt" ]; then
    pip download -q --no-deps -d "$dir/wheels" nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88
    rm -rf "$dir/x"
    for w in "$dir"/wheels/*.whl; do
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$dir/x"
    done
    rm -rf "$dir/cu13" && mv "$dir/x/nvidia/cu13" "$dir/cu13" && rm -rf "$dir/x"
fi

# A Cargo.toml marks the folder as the project CubeCL keeps its cache under (the outermost one
# above the working folder, so none may be above it).
cd "$run"
up=$(dirname "$run")
while [ "$up" != / ]; do
    if [ -f "$up/Cargo.toml" ]; then echo "$up holds a Cargo.toml: set TMPDIR elsewhere" >&2; exit 2; fi
    up=$(dirname "$up")
done
touch Cargo.toml
for d in configs corpora checkpoints; do ln -sfn "$root/$d" "$d"; done
export LD_LIBRARY_PATH="$dir/lib:$dir/cu13/lib" CUDA_PATH="$dir/cu13" FAKE_CUDA_REPORT="$dir/$name.json"
rm -f "$dir/$name.json"
start=$(date +%s)
set +e
# FAKE_CUDA_WRAP: a command to run masklm under (e.g. `perf record …`, bench/thread_work.sh).
${FAKE_CUDA_WRAP:-} "$target/release/masklm" "${FAKE_CUDA_SUBCOMMAND:-bench}" "$@" > "$dir/$name.log" 2>&1
rc=$?
set -e
echo "exit $rc after $(( $(date +%s) - start )) s; output in $dir/$name.log, counts in $dir/$name.json"
tail -n 3 "$dir/$name.log"
# The counts are written when the process exits normally (no file after a crash).
if [ -f "$dir/$name.json" ]; then
    python3 - "$dir/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"modules loaded {d['modules']} ({d['ptx_bytes'] / 1e6:.1f} MB of PTX), launches {d['launches']}, "
      f"device->host reads {d['dtoh']}, host->device writes {d['htod']}, distinct kernels {len(d['kernels'])}")
PY
fi
exit $rc

#!/usr/bin/env bash
# The GPU measurement of issue 14, as one device call that builds nothing. Prepare here first
# (../shared/guides/gpu.md): the stripped, compressed binary and Debian's Vulkan loader in
# .device/ (kept out of git):
#
#   cargo build --release          # the default features include vulkan
#   mkdir -p .device/gl && strip -o .device/masklm target/release/masklm && xz -T2 -6 -f .device/masklm
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   mkdir -p /tmp/amd64/partial && apt-get $o update
#   (cd .device/gl && apt-get $o download libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2)
#
# (the NVIDIA Vulkan driver, libGLX_nvidia, needs libglvnd: with the Vulkan loader alone, wgpu
# found no adapter on the H100 machine of 2026-11-26), and for `train.backend = "cuda"` the CUDA
# headers that NVRTC reads (1.5 MB; NVRTC itself, 90 MB, is too large to carry and comes from the
# pip packages PyTorch brought to the device machine; `crt/` is its own package since CUDA 13, and
# without it every tensor-core kernel fails at `#include "crt/mma.h"`, found by bench/fake_cuda.sh):
#
#   pip download --no-deps -d /tmp/cu nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
#     nvidia-cuda-crt==13.0.88
#   (cd /tmp/cu && for w in *.whl; do unzip -qo "$w" 'nvidia/cu13/include/*'; done)
#   tar -cJf .device/cuda-include.tar.xz -C /tmp/cu/nvidia/cu13 include
#
# then run `bash bench/gpu_device.sh [gpu_compare.py options]` on the device (carry .device), e.g.
#   bash bench/gpu_device.sh --shapes bert-base --runs cuda:bf16,vulkan:f16 --modes bf16,f32 \
#     --steps 10 --warmup 3 --timeout 240 --profile cuda:bf16 --profile-out "$OUT/profile.log"
# (`--profile` adds one short run from the warm cache with every kernel timed, matrix products
# included, and keeps what autotune chose in each run that tuned: where the time goes, from the
# same call; checked on bench/fake_cuda.sh's stand-in, whose timings mean nothing.)
# Prints the card, the driver and bench/gpu_compare.py's table; copies it to $OUT when set.
#
# CubeCL's kernel and autotune cache (target/environment/ here) is what makes a BERT-base f16 run's
# first step take seconds instead of over two minutes. The device machine starts bare, so the
# script takes the cache from .device/environment.tar.xz when there is one and leaves the new one
# in $OUT/environment.tar.xz: copy that to .device/ before the next call. For `cuda`, whose kernels
# NVRTC compiles (a cold BERT-base bf16 run compiled for 8 to 11 minutes on the 2-core machine), a
# first cache can be made without a GPU, for the binary packed above and no other (the PTX is keyed
# by its build id): `bash bench/fake_cuda.sh NAME <the same bench options>`, then
# `python3 bench/ptx_cache.py` writes .device/environment.tar.xz with the PTX alone.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in .device/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The driver's own manifest, where the machine mounts the driver there.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES="$nvidia_icd"; fi
xz -dkf .device/masklm.xz && chmod +x .device/masklm
export XDG_RUNTIME_DIR=/tmp
# CUDA: the carried headers as CUDA_PATH, and the newest NVRTC (libnvrtc.so.N) the device's pip
# packages hold (PyTorch's cu13 wheels: site-packages/nvidia/cu13/lib) on the library path.
if [ -f .device/cuda-include.tar.xz ]; then
    mkdir -p /tmp/cuda && tar -xJf .device/cuda-include.tar.xz -C /tmp/cuda
    export CUDA_PATH=/tmp/cuda
fi
nvrtc=$(python3 -c 'import site; print("\n".join(site.getsitepackages()))' |
    xargs -I{} find {} -name 'libnvrtc.so.[0-9]*' 2>/dev/null | sort -V | tail -1 || true)
if [ -n "$nvrtc" ]; then
    export LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "CUDA: CUDA_PATH=${CUDA_PATH:-unset}, NVRTC ${nvrtc:-not found}"
if [ -f .device/environment.tar.xz ]; then
    mkdir -p target && tar -xJf .device/environment.tar.xz -C target
    echo "kernel cache restored: $(find target/environment -type f | wc -l) files"
fi
# Saved however the runs end (a timed-out run has still compiled and tuned most kernels).
save_cache() {
    if [ -n "${OUT:-}" ] && [ -d target/environment ]; then
        tar -cJf "$OUT/environment.tar.xz" -C target environment
    fi
}
trap save_cache EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 bench/gpu_compare.py --masklm .device/masklm "$@" | tee "${OUT:-/tmp}/gpu_compare.txt"
# Profiling logs (--profile-out) can be large: compressed, they come back from the device.
for f in "${OUT:-/tmp}"/profile.log.*; do if [ -f "$f" ]; then xz -T0 -f "$f"; fi; done

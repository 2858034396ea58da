#!/usr/bin/env bash
# A software Vulkan device with cooperative matrices, for developing the tensor-core path without
# a GPU: Debian bookworm's Mesa 22.3 lavapipe has no VK_KHR_cooperative_matrix, so CubeCL never
# offers its cmma matrix products there; Mesa 26.2's lavapipe (Debian sid) reports both
# VK_KHR_cooperative_matrix and VK_NV_cooperative_matrix2. It needs a newer C library than this
# machine's, so it lives in a Debian chroot (as root; about 5 minutes and 900 MB the first time).
#
#   bash bench/lavapipe_coopmat.sh setup                  # once: /work/lavapipe-sid
#   bash bench/lavapipe_coopmat.sh run OUT -- bench --config configs/bench-mini.toml --json \
#       --steps 2 --warmup 1 --set train.backend=vulkan --set train.precision=f16 \
#       --set train.batch_size=4 --set model.num_hidden_layers=1
#
# `run` copies target/release/masklm, configs/, the bench-mini tokenizer and corpora into the
# chroot's folder OUT (relative to its /work), asks CubeCL for its autotune decisions
# (OUT/autotune.jsonl; read them with bench/autotune_summary.py) and runs masklm there, with its
# own kernel cache. Emulated matrix units are slow: autotuning BERT-base's products does not
# finish in minutes, so use tiny shapes; what it shows is which kernels CubeCL offers, compiles
# and picks, not their speed on a GPU.
set -euo pipefail
root=${LAVAPIPE_ROOT:-/work/lavapipe-sid}
cd "$(dirname "$0")/.."
case "${1:-}" in
setup)
    debootstrap --variant=minbase --include=libvulkan1 trixie "$root" http://deb.debian.org/debian
    echo "deb http://deb.debian.org/debian sid main" >"$root/etc/apt/sources.list.d/sid.list"
    # The package mirror is a snapshot, so sid's Release file reads as expired.
    apt_sid=(-o Acquire::Check-Valid-Until=false)
    chroot "$root" apt-get "${apt_sid[@]}" update
    chroot "$root" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_sid[@]}" install -y -t sid mesa-vulkan-drivers vulkan-tools
    chroot "$root" vulkaninfo 2>/dev/null | grep -E "driverInfo|VK_KHR_cooperative_matrix|VK_NV_cooperative_matrix2"
    ;;
run)
    out=$2
    shift 3 # run OUT --
    mountpoint -q "$root/proc" || mount --bind /proc "$root/proc"
    mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
    dir="$root/work/$out"
    mkdir -p "$dir/checkpoints/bench-mini" "$dir/corpora"
    cp target/release/masklm "$dir/"
    cp -r configs "$dir/"
    cp checkpoints/bench-mini/tokenizer.json "$dir/checkpoints/bench-mini/"
    cp -r corpora/tinystories corpora/wikitext-2-raw "$dir/corpora/"
    printf '[autotune.decisions]\nfile = "/work/%s/autotune.jsonl"\n' "$out" >"$dir/cubecl.toml"
    chroot "$root" env XDG_RUNTIME_DIR=/tmp bash -c 'cd "/work/$0" && ./masklm "$@"' "$out" "$@"
    ;;
*)
    echo "usage: $0 setup | run OUT -- MASKLM_ARGS..." >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# What each of masklm's host threads does per step on the CUDA path, with the time they spin
# waiting for one another taken out (issue 14): a `perf` profile of bench/fake_cuda.sh's run
# (the stand-in driver: launches cost nothing), its samples classified by thread (`masklm`, the
# main thread recording operations; `DSU-…`, burn's fusion server; `DSD-…`, CubeCL's device
# server) and by whether they fall in a spin-wait (the instruction after a `pause`: CubeCL's
# channels spin before they yield). On this 2-vCPU machine three threads that spin share two
# cores, so the measured seconds per step overstate what a host with a core per thread would
# take; the work per step of the busiest thread is that host's floor (the threads pipeline).
#
#   bash bench/thread_work.sh NAME [masklm bench options, as for bench/fake_cuda.sh]
#
# Needs `perf` (linux-tools) and a warm environment (TMPDIR as for bench/fake_cuda.sh): the
# profile starts after DELAY_MS (default 5000) to leave out start-up and the first steps.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: bash bench/thread_work.sh NAME [masklm bench options]}
target=${CARGO_TARGET_DIR:-$PWD/target}
data=$target/fake_cuda/$name.perf
freq=${FREQ:-499}
FAKE_CUDA_WRAP="perf record -q -F $freq -D ${DELAY_MS:-5000} -o $data" bash bench/fake_cuda.sh "$@"
perf script -G -i "$data" --show-mmap-events -F comm,ip,dso,time 2>/dev/null |
    python3 bench/thread_work.py "$target/release/masklm" "$target/fake_cuda/$name.log" "$freq"

#!/usr/bin/env bash
# Runs a command and prints its VmHWM, RssAnon and RssFile (from /proc/PID/status, KiB) every
# INTERVAL seconds while it runs (BENCHMARKS.md, "Corpora larger than memory"):
#
#   bash bench/rss_during.sh 5 target/release/masklm bench --config configs/bench-mini.toml \
#     --set 'data.train=["/tmp/bigc/text"]' --set 'data.cache_dir="/tmp/bigc/cache/8"' --steps 60 --warmup 1
set -euo pipefail
interval=$1
shift
"$@" > /dev/null 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  grep -E "VmHWM|RssAnon|RssFile" "/proc/$pid/status" 2>/dev/null | tr -s ' \t' ' ' | paste -sd' ' || true
  sleep "$interval"
done
wait "$pid"

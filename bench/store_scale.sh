#!/usr/bin/env bash
# The token store at 1 GB and 8 GB of text (issue 15; BENCHMARKS.md "Corpora larger than
# memory"). Needs the corpus of bench/make_corpus.py and a release build:
#
#   python3 bench/make_corpus.py --gb 8 --out /tmp/bigc/text
#   bash bench/store_scale.sh /tmp/bigc/text /tmp/bigc/cache
#
# For each size: `data prepare` from nothing (MB/s, peak RSS), `data prepare` again on the
# current store (the start cost), `bench` at bench-mini shapes on it (data_ready_s, tokens/s,
# peak RSS) and a 3-step `train` (its "ready in" line, peak RSS). Then bench on the shipped
# corpus for the tokens/s it is compared with. Peak RSS is GNU time's maximum resident set.
set -euo pipefail
text=$1
cache=$2
bin=target/release/masklm
cfg=configs/bench-mini.toml
timed() { /usr/bin/time -f "  wall %e s, peak RSS %M KB" "$@"; }
for parts in 1 8; do
  files=$(ls "$text"/part-*.txt | head -n "$parts" | sed 's/.*/"&"/' | paste -sd,)
  set_train=(--set "data.train=[$files]" --set "data.cache_dir=\"$cache/$parts\"")
  echo "== $parts GB: $(du -ch --apparent-size $(ls "$text"/part-*.txt | head -n "$parts") | tail -1)"
  echo "-- data prepare (from nothing)"
  rm -rf "${cache:?}/$parts"
  timed $bin data prepare --config $cfg "${set_train[@]}"
  echo "-- data prepare (current store: the start cost)"
  timed $bin data prepare --config $cfg "${set_train[@]}"
  du -sh "$cache/$parts"
  echo "-- bench"
  timed $bin bench --config $cfg "${set_train[@]}" --steps 5 --warmup 1 --json
  echo "-- train, 3 steps"
  rm -rf /tmp/store-scale-run
  timed $bin train --config $cfg "${set_train[@]}" --set train.steps=3 --set train.warmup_steps=1 --set train.eval_every=0 \
    --set train.save_every=0 --set 'train.out_dir="/tmp/store-scale-run"' 2>&1 | grep -E "data:|wall|rows"
done
echo "== the shipped corpus (bench-mini as configured)"
timed $bin bench --config $cfg --steps 5 --warmup 1 --json
echo "== tokens/s, 8 GB store against the shipped corpus, alternated (10 timed steps after 2)"
for round in 1 2 3 4; do
  big=$($bin bench --config $cfg "${set_train[@]}" --steps 10 --warmup 2 --json 2>/dev/null)
  small=$($bin bench --config $cfg --steps 10 --warmup 2 --json 2>/dev/null)
  python3 -c 'import json,sys; b,s=(json.loads(x) for x in sys.argv[2:]); print("round %s: 8 GB %.0f tokens/s (data %.3f), shipped %.0f (data %.3f), ratio %.3f" % (sys.argv[1], b["tokens_per_sec"], b["data_share"], s["tokens_per_sec"], s["data_share"], b["tokens_per_sec"] / s["tokens_per_sec"]))' "$round" "$big" "$small"
done

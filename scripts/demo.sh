#!/usr/bin/env bash
# The main job: Multi30k en->de from raw text to scores and translations, on this machine.
set -euo pipefail
MIN="${DEMO_MINUTES:-10}"
OUT="${DEMO_DIR:-work/demo}"
mkdir -p "$OUT"
echo "== 1. prepare Multi30k en-de (joint 8k BPE)"
lucidmt prepare --dataset multi30k --src en --tgt de --vocab-size 8000 --out "$OUT/prep" 2>&1 | tail -2
# short budgets (up to 20 minutes, ~10 epochs) train best without dropout; hour-long runs need it (see the recipes)
RECIPE=recipes/multi30k-small.yaml
if awk -v m="$MIN" 'BEGIN { exit !(m <= 20) }'; then RECIPE=recipes/multi30k-small-short.yaml; fi
echo "== 2. train the small preset for ${MIN} minutes ($RECIPE)"
rm -rf "$OUT/run"
lucidmt train --data "$OUT/prep" --out "$OUT/run" --preset small --config "$RECIPE" --max-minutes "$MIN"
echo "   learning curve: $OUT/run/learning_curve.png"
echo "== 3. choose on the validation set: the best checkpoint, the last, or an average of the last 2-3"
lucidmt average "$OUT/run" --last 3 --select --out "$OUT/run/final"
echo "== 4. evaluate on test_2016_flickr (beam 4)"
lucidmt evaluate "$OUT/run/final" --dataset multi30k --split test_2016_flickr --beam 4
echo "== 5. translate three sentences"
printf '%s\n' "A man is riding a bicycle down the street." \
  "Two children are playing with a ball in the park." \
  "A woman in a red dress is singing on stage." | lucidmt translate "$OUT/run/final" --beam 4

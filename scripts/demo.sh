#!/usr/bin/env bash
# The main job in quick mode: data -> the homework grid on Ray Tune -> MLflow -> report.
# Run through `make demo`, which puts the project's .venv first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

EXPERIMENT=${EXPERIMENT:-medgrid-demo}
EPOCHS=${EPOCHS:-5}          # quick mode: every trial capped at this many epochs
LIMIT_TRAIN=${LIMIT_TRAIN:-20000}  # ... and trained on a seeded subset of this many images
OUT=${OUT:-demo_report}

cache="${MEDGRID_DATA_DIR:-$HOME/.medmnist}"
# Without network the download fails: that is expected here, so its error line is kept quiet
# and the fallback below says what happens instead.
if [ -f "$cache/octmnist.npz" ] || medgrid data fetch --timeout 5 2>/dev/null; then
  data="$cache/octmnist.npz"
  echo "== data: the real OCTMNIST at $data"
else
  data="data/demo_synthetic.npz"
  mkdir -p data
  [ -f "$data" ] || medgrid data synth --out "$data" --train 20000 --val 3000 --test 1000 --seed 0
  cat <<BANNER
==================================================================================
== Note: OCTMNIST is not in the cache and could not be downloaded, so this demo
== runs on the SYNTHETIC stand-in ($data), reduced size. Its numbers are
== NOT the homework's; every run is tagged dataset=synthetic.
==================================================================================
BANNER
fi

medgrid tune search_spaces/hw1.yaml --data "$data" --experiment "$EXPERIMENT" \
  --epochs "$EPOCHS" --limit-train "$LIMIT_TRAIN"

medgrid report --experiment "$EXPERIMENT" --out "$OUT"
cat <<DONE
== report:  $OUT/report.html (and report.md, summary.csv, one CSV per table)
==          again later: .venv/bin/medgrid report --experiment $EXPERIMENT --out $OUT
== browse every run in MLflow's UI:  .venv/bin/medgrid ui
==          then open http://127.0.0.1:5000 (plain \`mlflow ui\` in this folder works too)
DONE

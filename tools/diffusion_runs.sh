#!/usr/bin/env bash
# The training runs behind the bundled generator checkpoint and the Diffusion section of BENCHMARKS.md.
# Each run uses one CPU thread. Usage: tools/diffusion_runs.sh ablations|bundled|finetune [RUNS_DIR]
#   ablations: 16x16 frames, base stage then seven grid-stage variants (sync mode, order, dropped
#              sync layers, mixed schedule), all from the same base checkpoint with the same steps;
#   bundled:   32x32 frames, base stage then the learned-sync grid stage (the first bundled checkpoint);
#   finetune:  the current bundled checkpoint: the first one (INIT, default data/diffusion as it was
#              before, i.e. the `bundled` run's checkpoint) fine-tuned with the same-view anchor
#              (output head zeroed, so it starts exactly at the copy-same-view baseline) on the 4x4
#              fill task, 240 scenes; copy its checkpoint/ to data/diffusion/.
# BASE_INIT_16 / BASE_INIT_32: optional checkpoints the base stages start from (the bundled runs
# warm-started from base models trained on an earlier version of recon.synth; see BENCHMARKS.md).
# ANCHOR (ablations only): the anchor rule of every ablation model, nearest (default) or same_view;
# ABL_BASE / ABL_PSEUDO / ABL_GRID: the ablations' base, pseudo-4D and grid steps (300 / 120 / 380).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?ablations or bundled}
R=${2:-runs/diffusion}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
T="python tools/train_diffusion.py --threads 1 --scenes 120 --bank-cache $R/bank2.pt"
if [ "$what" = ablations ]; then
  S="--model.height 16 --model.width 16 --model.anchor ${ANCHOR:-nearest}"
  $T --out $R/v2a16/base $S --base-steps ${ABL_BASE:-300} --batch 8 ${BASE_INIT_16:+--init-from $BASE_INIT_16}
  G="$S --init-from $R/v2a16/base/checkpoint --batch 4 --pseudo-steps ${ABL_PSEUDO:-120} --grid-steps ${ABL_GRID:-380}"
  $T --out $R/v2a16/grid-learned $G --model.sync learned
  $T --out $R/v2a16/grid-hard $G --model.sync hard
  $T --out $R/v2a16/grid-sequential $G --model.order sequential
  $T --out $R/v2a16/grid-soft $G --model.sync soft
  $T --out $R/v2a16/grid-drop-first $G --model.sync learned --model.drop-sync first
  $T --out $R/v2a16/grid-drop-last $G --model.sync learned --model.drop-sync last
  $T --out $R/v2a16/grid-mixed $G --model.sync learned --schedule mixed
elif [ "$what" = finetune ]; then
  INIT=${INIT:-$R/v2b32/learned/checkpoint}
  python tools/train_diffusion.py --threads 1 --scenes 240 --bank-cache $R/bank240.pt --out $R/ft \
    --init-from $INIT --no-inherit-cross-view --reset-head --model.anchor same_view \
    --grid-steps ${STEPS:-2600} --batch 8 --lr 3e-4 --warmup 100 --fill-frac 0.75 --log-every 50 --sample-every 650 --save-every 200
elif [ "$what" = bundled ]; then
  $T --out $R/v2b32/base --base-steps 150 --batch 4 ${BASE_INIT_32:+--init-from $BASE_INIT_32}
  $T --out $R/v2b32/learned --init-from $R/v2b32/base/checkpoint --model.sync learned --pseudo-steps 150 --grid-steps 650 --batch 4
else
  echo "unknown: $what" >&2; exit 2
fi

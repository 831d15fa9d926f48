#!/usr/bin/env bash
# The bundled `demo` model, end to end: procedural sample pools, then the three stages (vae, single, multi),
# then the fp16 release and its held-out report. Sized for a 2-core CPU shared with other jobs (~70 min);
# on a GPU drop --threads and raise --steps / --batch. See stablemtl_edge/weights/demo/RECIPE.md for the
# measured times and results of the run that produced the shipped weights.
set -euo pipefail

RUN=${RUN:-/tmp/smtl}                 # work directory (pools, runs)
DEST=${DEST:-stablemtl_edge/weights/demo}
PY=${PY:-python}
export OMP_NUM_THREADS=1              # 1 thread per process: 2-thread OpenMP collapses on a shared 2-core box
TWO_PROCS="$PY -m torch.distributed.run --standalone --nproc_per_node 2 -m stablemtl_edge.training.cli"

# 0. Render the procedural training scenes once (train split, 128x192).
stablemtl-train pool --output "$RUN/pool" --count indoor=1200,driving=1000,flying=600 --resolution 128x192

# 1. The autoencoder (the small preset has no pretrained VAE): RGB frames and every task image, 64x64 crops.
#    Two phases as run for the shipped weights: 500 steps, then 300 more on 2 processes from the first.
stablemtl-train --stage vae --preset small --output "$RUN/runs/vae" --data pool="$RUN/pool" \
    --steps 500 --batch 4 --crop 64x64 --lr 5e-4 --warmup 50 --decay-horizon 500 --final-ratio 0.1 \
    --checkpoint-every 100 --val-per-source 4 --threads 1 --seed 0
$TWO_PROCS --stage vae --init-from "$RUN/runs/vae/model" --output "$RUN/runs/vae2" --data pool="$RUN/pool" \
    --steps 300 --batch 2 --crop 64x64 --lr 5e-4 --warmup 20 --decay-horizon 300 --final-ratio 0.3 \
    --checkpoint-every 50 --val-per-source 3 --threads 1 --seed 10

# 2. Stage 1, single-stream UNet (VAE frozen); 2 processes (gloo) x batch 4 = global batch 8.
$TWO_PROCS --stage single --init-from "$RUN/runs/vae2/model" --output "$RUN/runs/single" --data pool="$RUN/pool" \
    --steps 550 --batch 4 --lr 1e-3 --warmup 50 --decay-horizon 550 --final-ratio 0.1 \
    --checkpoint-every 50 --val-per-source 3 --threads 1 --seed 1

# 3. Stage 2, multi-stream: frozen auxiliary copy of stage 1, main stream with zero-initialised task attention.
$TWO_PROCS --stage multi --init-from "$RUN/runs/single/model" --output "$RUN/runs/multi" --data pool="$RUN/pool" \
    --steps 220 --batch 2 --lr 3e-4 --warmup 20 --decay-horizon 220 --final-ratio 0.1 \
    --checkpoint-every 20 --val-per-source 3 --threads 1 --seed 2

# 4. Ship it: fp16 storage, then the held-out report of exactly the shipped weights.
stablemtl-train release --model "$RUN/runs/multi/model" --output "$DEST" --dtype fp16
stablemtl-train evaluate --model "$DEST" --split test --per-domain 32 --output "$DEST/metrics.json" --threads 1

#!/usr/bin/env bash
# The prepared GPU check (issue 17 item 7, issue 18 item 8): one run on one H100 within 8 minutes.
#
#   scripts/gpu_check.sh --out "$OUT"                 # on the GPU machine: sd2 (random weights) at 384x512
#   scripts/gpu_check.sh --dry-run --out out/dry      # anywhere: tiny preset at 64x64, GPU steps skipped
#
# Steps, in order of what the check is for: probe the machine; a random-weight multi-stream checkpoint; a
# distilled decoder of it (a few steps: its speed is what is measured, not its accuracy); export fp32 +
# fp16 with the stored onnxruntime references; fp16 TensorRT engines; int8 through stablemtl-calibrate and
# its engines; fp8 engines once calibration writes fp8 graphs; the runtime bench (single-stream depth, then
# multi-stream all 7 tasks, full and tiny decoder); CUDA graphs off and on; parity of the engines against
# the stored references; the onnxruntime self-check. Each step runs under its own time budget, cut to what
# is left of the total; a step that fails, times out or lacks what it needs is recorded and the run goes on.
# A step whose input failed is skipped with that reason; in the dry run the GPU steps are skipped with the
# reason TensorRT or CUDA is missing here. Off the dry run, a machine without them stops after the probe
# (its GPU steps failed with the reason) unless --keep-going.
#
# Writes to --out (default: $OUT): gpu_check.json (every step: status, seconds, budget, reason, result
# JSON), summary.md (the table also printed at the end), bench.md, gpu_check.log. The work directory
# (--work, default out/gpu_check/PRESET-HxW, ignored by git) keeps the checkpoint, artifact and engines,
# so a second run on the same machine reuses them.
#
# The GPU machine has no network: the package runs from this tree (PYTHONPATH) on that machine's Python,
# and what it lacks comes as wheels (--wheels DIR, installed into the work directory without network).
set -uo pipefail # no -e: a failing step is recorded, the run goes on

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SKIP_RC=99 # a step's exit status meaning "skipped"; its last line of output says why

usage() {
    cat <<EOF
usage: scripts/gpu_check.sh [--dry-run] [--out DIR] [--work DIR] [--python PY] [--wheels DIR]
                            [--preset NAME] [--size HxW] [--budget S] [--opt-level N] [--keep-going]

  --dry-run      no GPU: a tiny preset at a small size, GPU steps skipped with the reason
  --out DIR      where the JSON, tables and log go (default: \$OUT)
  --work DIR     checkpoint, artifact and engines, reused by a later run (default: out/gpu_check/PRESET-HxW)
  --python PY    interpreter (default: .venv/bin/python when present, else python3)
  --wheels DIR   install DIR/*.whl (no network, no dependencies) into the work directory first
  --preset NAME  model preset (default: sd2; dry run: tiny)
  --size HxW     processing size (default: 384x512; dry run: 64x64)
  --budget S     total time budget in seconds (default: 480; dry run: 900)
  --opt-level N  TensorRT builder optimisation level (default: 3)
  --keep-going   without TensorRT or CUDA, still run the CPU steps (default: stop after the probe,
                 so a machine that cannot build engines costs seconds, not the export's minutes)
EOF
}

parse_args() {
    DRY_RUN=0 OUT_DIR=${OUT:-} WORK="" PY="" WHEELS="" PRESET="" SIZE="" TOTAL="" OPT_LEVEL=3 KEEP_GOING=0
    while (($#)); do
        case $1 in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT_DIR=$2 && shift ;;
        --work) WORK=$2 && shift ;;
        --python) PY=$2 && shift ;;
        --wheels) WHEELS=$2 && shift ;;
        --preset) PRESET=$2 && shift ;;
        --size) SIZE=$2 && shift ;;
        --budget) TOTAL=$2 && shift ;;
        --opt-level) OPT_LEVEL=$2 && shift ;;
        --keep-going) KEEP_GOING=1 ;;
        -h | --help) usage && exit 0 ;;
        *) echo "gpu_check.sh: unknown argument \`$1\` (see --help)" >&2 && exit 2 ;;
        esac
        shift
    done
    [[ -n $OUT_DIR ]] || { echo "gpu_check.sh: no output directory: pass --out DIR (or set \$OUT)" >&2; exit 2; }
    if ((DRY_RUN)); then
        : "${PRESET:=tiny}" "${SIZE:=64x64}" "${TOTAL:=900}"
    else
        : "${PRESET:=sd2}" "${SIZE:=384x512}" "${TOTAL:=480}"
    fi
    if [[ -z $PY ]]; then
        PY=python3 && [[ -x $REPO/.venv/bin/python ]] && PY=$REPO/.venv/bin/python
    fi
    : "${WORK:=$REPO/out/gpu_check/$PRESET-$SIZE}"
}

# The step settings of each mode: pick GPU_VALUE DRY_VALUE.
pick() { if ((DRY_RUN)); then echo "$2"; else echo "$1"; fi; }

setup() {
    mkdir -p "$OUT_DIR" "$WORK/logs" "$WORK/results" || exit 2
    OUT_DIR=$(cd "$OUT_DIR" && pwd) WORK=$(cd "$WORK" && pwd)
    CKPT=$WORK/checkpoint TINY=$WORK/tiny_decoder ART=$WORK/artifact RES=$WORK/results STEPS=$WORK/steps.jsonl
    : >"$STEPS"
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    if [[ -n $WHEELS ]]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" "$WHEELS"/*.whl ||
            { echo "gpu_check.sh: could not install the wheels in $WHEELS" >&2; exit 2; }
        export PYTHONPATH=$WORK/site:$PYTHONPATH
    fi
    BENCH_FRAMES=$(pick 10 2) BENCH_WARMUP=$(pick 2 1) BASELINE=$(pick "" --no-baseline)
    TRT_PRECISIONS=fp16 CPU_PRECISIONS=fp32
    export REPO SKIP_RC DRY_RUN PY PRESET SIZE OPT_LEVEL CKPT TINY ART RES BENCH_FRAMES BENCH_WARMUP BASELINE
    export TRT_PRECISIONS CPU_PRECISIONS
}

py() { "$PY" "$@"; }
glue() { "$PY" "$REPO/scripts/gpu_check.py" "$@"; }
skip() { echo "$1" && exit "$SKIP_RC"; }

# -- the steps (each runs in its own shell under `timeout`; what it needs is exported) --------------------------
step_env() { glue probe --json "$RES/env.json"; }

step_checkpoint() { glue checkpoint --preset "$PRESET" --out "$CKPT"; }

step_tiny_decoder() {
    if [[ -f $TINY/tiny_decoder.safetensors ]]; then
        echo "reusing the distilled decoder at $TINY"
        return 0
    fi
    py -m stablemtl_edge.training.cli distill-decoder --model "$CKPT" --out "$TINY" --steps 2 --pairs 1 \
        --batch-size 1 --size "$SIZE" --checkpoint-every 2 --no-gate --no-progress
}

step_export() {
    local tiny=none
    [[ ${STATUS_tiny_decoder:-} == ok ]] && tiny=$TINY
    py -m stablemtl_edge.export.cli export "$CKPT" --out "$ART" --mode multi --precision fp32,fp16 \
        --resolution "$SIZE" --tiny-decoder "$tiny" --overwrite
}

step_calibrate() {
    if glue has "$ART" int8; then
        echo "reusing the int8 graphs already in $ART"
        return 0
    fi
    py -m stablemtl_edge.calibration.cli -a "$ART" --calib-size 2 --gate-frames 2 --gate-max-frames 2 \
        --mixed-tries 0
}

build_engines() {
    glue has "$ART" "$1" || skip "the artifact has no $1 graphs (stablemtl-calibrate writes them)"
    py -m stablemtl_edge.export.cli build -a "$ART" --precision "$1" --optimization-level "$OPT_LEVEL"
}
step_engines_fp16() { build_engines fp16; }
step_engines_int8() { build_engines int8; }
step_engines_fp8() { build_engines fp8; }

# bench NAME TASKS MODE: the runtime bench of every built precision, full and (when exported) tiny decoder.
bench() {
    local backend=tensorrt precisions=$TRT_PRECISIONS decoders=full
    if ((DRY_RUN)); then backend=onnxruntime precisions=$CPU_PRECISIONS; fi
    glue has "$ART" "${precisions%%,*}" --component tiny_decoder && decoders=full,tiny
    # shellcheck disable=SC2086 # BASELINE is one flag or none
    py -m stablemtl_edge.runtime.cli_bench --artifacts "$ART" --tasks "$2" --mode "$3" --backend "$backend" \
        --precision "$precisions" --decoder "$decoders" --frames "$BENCH_FRAMES" --warmup "$BENCH_WARMUP" \
        --no-isolate $BASELINE --json "$RES/$1.json" --markdown "$RES/$1.md"
}
step_bench_single() { bench bench_single depth single; }
step_bench_multi() { bench bench_multi all multi; }

step_cuda_graphs() {
    glue cuda-graphs "$ART" --config single/depth --config multi/all --precision fp16 \
        --frames "$BENCH_FRAMES" --warmup "$BENCH_WARMUP" --json "$RES/cuda_graphs.json"
}

step_parity_tensorrt() {
    glue parity "$ART" --backend tensorrt --precision "$TRT_PRECISIONS" --json "$RES/parity_tensorrt.json"
}

step_parity_onnxruntime() {
    local precisions=fp16
    ((DRY_RUN)) && precisions=fp32,fp16
    [[ ${STATUS_calibrate:-} == ok ]] && precisions+=,int8
    glue parity "$ART" --backend onnxruntime --precision "$precisions" --json "$RES/parity_onnxruntime.json"
}

export -f py glue skip build_engines bench
export -f step_env step_checkpoint step_tiny_decoder step_export step_calibrate
export -f step_engines_fp16 step_engines_int8 step_engines_fp8 step_bench_single step_bench_multi
export -f step_cuda_graphs step_parity_tensorrt step_parity_onnxruntime

# -- the runner ------------------------------------------------------------------------------------------------
last_line() { tr '\r' '\n' <"$1" | sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e 's/[[:space:]]*$//' | grep -v '^$' | tail -n 1; }

# record NAME STATUS SECONDS BUDGET REASON [NOTE]
record() {
    glue record --steps "$STEPS" --name "$1" --status "$2" --seconds "$3" --budget "$4" --reason "$5" \
        --note "${6:-}" --result "$RES/$1.json"
    export "STATUS_$1=$2"
    printf '%-18s %-8s %6s s / %4s s  %s\n' "$1" "$2" "$3" "$4" "${5:-${6:-}}" | cut -c1-200
}

# run_step [--gpu] NAME BUDGET [NEEDED_STEP...]: run step_NAME under min(BUDGET, time left), then record it.
run_step() {
    local gpu=0
    [[ $1 == --gpu ]] && gpu=1 && shift
    local name=$1 budget=$2 need
    shift 2
    if ((gpu && DRY_RUN)); then
        record "$name" skipped 0 "$budget" "dry run: ${GPU_MISSING}"
        return
    fi
    if [[ -n ${STOPPED:-} ]]; then
        if ((gpu)); then
            record "$name" failed 0 "$budget" "not run: ${GPU_MISSING}"
        else
            record "$name" skipped 0 "$budget" "$STOPPED"
        fi
        return
    fi
    for need in "$@"; do
        local status_var="STATUS_$need"
        if [[ ${!status_var:-} != ok ]]; then
            record "$name" skipped 0 "$budget" "needs step $need, which is ${!status_var:-not run}"
            return
        fi
    done
    local left=$((DEADLINE - SECONDS))
    if ((left < 10)); then
        record "$name" skipped 0 "$budget" "out of time: the ${TOTAL} s total budget is spent"
        return
    fi
    ((budget > left)) && budget=$left
    local log=$WORK/logs/$name.log start=$SECONDS rc
    RAN+=("$name")
    rm -f "$RES/$name.json"
    timeout -k 10 "$budget" bash -c "step_$name" >"$log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) note
    note=$(last_line "$log")
    case $rc in
    0) record "$name" ok "$took" "$budget" "" "$note" ;;
    124 | 137) record "$name" timeout "$took" "$budget" "ran past its ${budget} s budget; last output: $note" ;;
    "$SKIP_RC") record "$name" skipped "$took" "$budget" "$note" ;;
    *) record "$name" failed "$took" "$budget" "exit status $rc: $note" ;;
    esac
}

collect() {
    local name
    for name in "${RAN[@]}"; do
        echo "===== $name"
        tr '\r' '\n' <"$WORK/logs/$name.log"
    done >"$OUT_DIR/gpu_check.log"
    cat "$RES"/bench_*.md >"$OUT_DIR/bench.md" 2>/dev/null || rm -f "$OUT_DIR/bench.md"
    local commit dry=()
    commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    ((DRY_RUN)) && dry=(--dry-run)
    glue report --steps "$STEPS" --out "$OUT_DIR" --seconds "$SECONDS" --budget "$TOTAL" "${dry[@]}" \
        --meta "preset=$PRESET" "size=$SIZE" "commit=$commit" "python=$PY" "host=$(hostname)" \
        "opt_level=$OPT_LEVEL" "work=$WORK"
}

main() {
    parse_args "$@"
    setup
    SECONDS=0
    DEADLINE=$TOTAL
    RAN=() # the steps that ran, in order: their logs make gpu_check.log
    echo "gpu check: $PRESET at $SIZE, $( ((DRY_RUN)) && echo "dry run, ")budget $TOTAL s, work $WORK"
    run_step env 60
    GPU_MISSING=$(py -c 'import json, sys; print("; ".join(json.load(open(sys.argv[1]))["missing"]))' \
        "$RES/env.json" 2>/dev/null) || GPU_MISSING="TensorRT and CUDA not probed (step env is ${STATUS_env:-not run})"
    if ((!DRY_RUN && !KEEP_GOING)) && [[ -n $GPU_MISSING ]]; then
        STOPPED="stopped after the probe: this machine cannot build TensorRT engines (--keep-going runs the CPU steps)"
    fi
    run_step checkpoint "$(pick 90 120)"
    run_step tiny_decoder "$(pick 90 120)" checkpoint
    run_step export "$(pick 300 420)" checkpoint
    run_step --gpu engines_fp16 "$(pick 180 60)" export
    run_step calibrate "$(pick 120 300)" export
    [[ ${STATUS_calibrate:-} == ok ]] && export CPU_PRECISIONS=fp32,int8
    run_step --gpu engines_int8 "$(pick 120 60)" calibrate
    [[ ${STATUS_engines_int8:-} == ok ]] && export TRT_PRECISIONS+=,int8
    run_step --gpu engines_fp8 "$(pick 90 60)" export
    [[ ${STATUS_engines_fp8:-} == ok ]] && export TRT_PRECISIONS+=,fp8
    local bench_needs
    bench_needs=$(pick engines_fp16 export)
    run_step bench_single "$(pick 60 120)" "$bench_needs"
    run_step bench_multi "$(pick 90 180)" "$bench_needs"
    run_step --gpu cuda_graphs "$(pick 60 60)" engines_fp16
    run_step --gpu parity_tensorrt "$(pick 60 60)" engines_fp16
    run_step parity_onnxruntime "$(pick 120 180)" export
    echo
    collect
}

main "$@"

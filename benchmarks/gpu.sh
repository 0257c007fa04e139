#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, one JSON line each (stdout).
#   bash benchmarks/gpu.sh [REFERENCE_DIR] [SECTIONS]
# REFERENCE_DIR: a checkout of AsuradaYuci/TF-CLIP to measure the reference alongside ('' or absent: skip it).
# SECTIONS: comma list of the sections below (default: all). Worst cases (timeouts): step 110 s, inference 45 s,
#   dense 60 s, phase1 100 s (the earlier set, about 5 min); compile 300 s, loading 240 s, mars 540 s (about 10 min).
# SMOKE=1: every section at a tiny scale on the CPU (tiny models, a few hundred frames): checks the script itself
#   where no GPU is. PYTHON: the interpreter (default python3).
set -u
cd "$(dirname "$0")/.."
ref=()
if [ $# -ge 1 ] && [ -n "$1" ]; then ref=(--reference-dir "$1"); fi
sections=",${2:-step,inference,dense,phase1,compile,loading,mars},"
want() { [[ "$sections" == *",$1,"* ]]; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py="${PYTHON:-python3}"
if [ "${SMOKE:-0}" = 1 ]; then
    dev=cpu; ref=(); tiny=(--tiny); scale=1
else
    dev=cuda; tiny=(); scale=0
fi
$py -c "import torch; print('# torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"
pick() { if [ "$scale" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# full-size training step, 4 ids x 4 clips x 8 frames, bf16 and fp16, with and without checkpointing, stride 16/12
want step && timeout 110 $py benchmarks/train_step.py --device $dev "${tiny[@]}" \
    --ids $(pick 4 2) --instances $(pick 4 1) --frames $(pick 8 2) --precisions $(pick bf16,fp16 fp32,bf16) \
    --strides $(pick 16,12 16) --checkpointing $(pick both off) --repeats $(pick 3 1) --warmup 1 "${ref[@]}"
# eval forward, 64 clips x 8 frames per forward
want inference && timeout 45 $py benchmarks/inference.py --device $dev "${tiny[@]}" --clips $(pick 64 1) \
    --frames $(pick 8 2) --repeats $(pick 3 1) --warmup 1 "${ref[@]}"
# dense evaluation from JPEG files: our pipeline (bf16, fp32) and torchreid's engine with resnext101_32x8d
want dense && timeout 60 $py benchmarks/dense_eval.py --device $dev "${tiny[@]}" --test-ids $(pick 20 10) \
    --max-frames $(pick 30 9) --batch-size $(pick 64 8) --workers $(pick 8 1) --precisions fp32,bf16 --repeats 1 \
    $(pick "" --skip-torchreid)
# phase 1 (CLIP-Memory): batched chunks (fp32, bf16) vs one forward per tracklet
want phase1 && timeout 100 $py benchmarks/phase1.py --device $dev "${tiny[@]}" --tracklets $(pick 300 6) \
    --max-frames $(pick 32 9) --batch-size $(pick 64 8) --workers $(pick 8 1)
# the 4x4x8 ViT-B/16 step at stride 16, eager and under torch.compile (tfclip.compile), against the reference's fp16
want compile && timeout 300 $py benchmarks/train_step.py --device $dev "${tiny[@]}" \
    --ids $(pick 4 2) --instances $(pick 4 1) --frames $(pick 8 2) --precisions $(pick bf16,fp16 fp32) --strides 16 \
    --checkpointing off --compile default --repeats $(pick 5 1) --warmup $(pick 2 1) "${ref[@]}"
# the loader on this host's CPU: (test - model) / Pillow decoding at workers 0 and 4, its parts; JPEG decoders,
# nvjpeg's batched GPU decoding among them
want loading && timeout 240 $py benchmarks/pipeline.py --frames $(pick 2000 250) --workers $(pick 0,4 0) \
    --parts --decoders --decoder-frames $(pick 1000 50)
# MARS scale: 100k test frames in ~60-frame tracklets, dense evaluation end to end (bf16 weights, 12 workers)
# against the model alone; phase 1 over 8,298 training tracklets; 150 training steps (eager, then compiled) with
# real loading against held batches
want mars && timeout 540 $py benchmarks/mars_scale.py --device $dev "${tiny[@]}" --workers $(pick 12 1) \
    --test-frames $(pick 100000 300) --train-tracklets $(pick 8298 24) --base-ids $(pick 8 2) \
    --batch-size $(pick 64 4) --steps $(pick 150 1) --repeats $(pick 10 1) --compile="$(pick ,default "")"
exit 0

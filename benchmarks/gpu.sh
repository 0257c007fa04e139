#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, one JSON line each (stdout).
#   bash benchmarks/gpu.sh [REFERENCE_DIR]
# REFERENCE_DIR: a checkout of AsuradaYuci/TF-CLIP (optional) to measure the reference alongside.
set -u
cd "$(dirname "$0")/.."
ref=()
if [ $# -ge 1 ]; then ref=(--reference-dir "$1"); fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print('# torch', torch.__version__, torch.cuda.get_device_name(0))"
# full-size training step, 4 ids x 4 clips x 8 frames, bf16 and fp16, with and without checkpointing, stride 16/12
timeout 110 python3 benchmarks/train_step.py --device cuda --ids 4 --instances 4 --frames 8 \
    --precisions bf16,fp16 --strides 16,12 --checkpointing both --repeats 3 --warmup 1 "${ref[@]}"
# eval forward, 64 clips x 8 frames per forward
timeout 45 python3 benchmarks/inference.py --device cuda --clips 64 --repeats 3 --warmup 1 "${ref[@]}"
# dense evaluation from JPEG files: our pipeline (bf16, fp32) and torchreid's engine with resnext101_32x8d
timeout 60 python3 benchmarks/dense_eval.py --device cuda --test-ids 20 --max-frames 30 --batch-size 64 \
    --workers 8 --precisions fp32,bf16
# phase 1 (CLIP-Memory): batched chunks (fp32, bf16) vs one forward per tracklet
timeout 100 python3 benchmarks/phase1.py --device cuda --tracklets 300 --max-frames 32 --batch-size 64 --workers 8

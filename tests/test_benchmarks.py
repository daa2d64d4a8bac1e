"""The benchmark suite's quick mode runs end to end and writes its reports (no timing asserts);
the GPU check's driver runs its CPU dry run and keeps its deadline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "suite.py"
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = [
    "start",
    "device",
    "profile",
    "tests",
    "train",
    "infer",
    "official",
    "ours-official-losses",
]
PARTS += ["tests-compile", "end"]


def test_benchmark_suite_quick_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--quick", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]
    variants = {(r["dtype"], r["variant"]) for r in results["inference"]}
    assert variants == {
        ("fp32", "channels_last"),
        ("fp32", "contiguous"),
        ("bf16", "channels_last"),
    }
    assert {r["stage"] for r in results["training"]} == {"prior", "finetune"}
    for section in ("inference", "training", "degradation"):
        for row in results[section]:
            rate = row.get("faces_per_s", row.get("img_per_s"))
            assert rate > 0, (section, row)
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("Machine:") and "| prior | gpen-tiny-32 |" in table


def test_training_benchmark_quick_mode(tmp_path):
    script = SUITE.parent / "train.py"
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["prior", "finetune"]
    for row in rows:
        assert row["img_per_s"] > 0 and row["s_per_step"] > 0 and row["batch"] == 4
    share = rows[1]["degradation_share"]
    assert 0 < share < 1  # the degradation alone is a fraction of a fine-tuning step
    assert "| prior | gpen-tiny-32 | 4 | 32-true | off |" in proc.stdout


def test_video_benchmark_reports_speed_split_and_flicker(tmp_path):
    out = tmp_path / "video.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SUITE.parent / "video.py"),
            "--presets",
            "gpen-tiny-32",
            "--frames",
            "8",
            "--flicker-frames",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    speed, flicker = json.loads(out.read_text())
    assert speed["frames"] == 8 and speed["faces"] == 16 and speed["frames_per_s"] > 0
    shares = [v for k, v in speed.items() if k.endswith("_share")]
    assert len(shares) == 6 and sum(shares) == pytest.approx(1.0)
    assert flicker["flicker_smoothed"] < flicker["flicker_raw"]
    assert flicker["jitter_smoothed"] < flicker["jitter_raw"]


def _gpu_check(out: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[dict], float]:
    """``gpu_check.sh quick-cpu`` into ``out``: the process, the results.jsonl rows, wall time."""
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(GPU_CHECK), "quick-cpu"],
        env={**os.environ, "PY": sys.executable, "OUT": str(out), **env},
        capture_output=True,
        text=True,
        timeout=400,
    )
    wall = time.monotonic() - t0
    lines = (out / "results.jsonl").read_text().splitlines()
    return proc, [json.loads(line) for line in lines], wall


def _order(rows: list[dict]) -> list[str]:
    """The parts in the order their lines came (consecutive repeats collapsed)."""
    order: list[str] = []
    for row in rows:
        if not order or order[-1] != row["part"]:
            order.append(row["part"])
    return order


def test_gpu_check_cpu_dry_run_writes_each_part_in_order(tmp_path):
    proc, rows, _ = _gpu_check(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _order(rows) == PARTS
    closing = {r["part"]: r["status"] for r in rows if "status" in r}
    has_official = (ROOT / ".official" / "GPEN" / "train_simple.py").is_file()
    assert closing == {
        "device": "ok",
        "profile": "ok",
        "tests": "ok",
        "train": "ok",
        "infer": "ok",
        "tests-compile": "skipped",
        "official": "ok" if has_official else "skipped",
        "ours-official-losses": "skipped",
        "end": "ok",
    }
    by_part: dict[str, list[dict]] = {}
    for row in rows:
        if "status" not in row:
            by_part.setdefault(row["part"], []).append(row)
    (device,) = by_part["device"]
    assert device["torch"] and device["cuda_available"] is False
    (tests,) = by_part["tests"]  # every gpu test collected, none run on the CPU
    assert tests["tests"] >= 5 and tests["skipped"] == tests["tests"]
    assert tests["failed"] == [] and tests["source"] == "junit"
    train = by_part["train"]
    assert [r["stage"] for r in train] == ["prior", "finetune"]
    for row in train:
        assert row["img_per_s"] > 0 and row["s_per_step"] > 0 and "error" not in row
        assert row["precision"] == "bf16-mixed" and row["peak_gib"] is None  # no GPU memory
    assert train[1]["degradation_share"] > 0 and train[1]["degradation_s"] > 0
    infer = by_part["infer"]
    assert [(r["batch"], r["cuda_graph"]) for r in infer] == [
        (1, False),
        (2, False),
        (1, True),
        (2, True),
    ]  # every eager row before the first CUDA-graph capture
    for row in infer:
        if row["cuda_graph"]:
            assert "CUDA" in row["skipped"]
        else:
            assert row["faces_per_s"] > 0 and row["dtype"] == "bfloat16"
    if has_official:
        (official,) = by_part["official"]
        assert official["built"] is True and official["ops"] == "native"
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {
        "results.jsonl",
        "device.txt",
        "tests.log",
        "train.log",
        "infer.log",
        "profile.log",
        "summary.md",
    } | ({"official.log"} if has_official else set())  # at most 8 files come back from a call
    summary = (tmp_path / "summary.md").read_text()
    assert "| train | stage finetune" in summary and "| end | status ok" in summary


def test_gpu_check_times_out_a_hung_part_and_keeps_its_deadline(tmp_path):
    budget = 28
    proc, rows, wall = _gpu_check(
        tmp_path, GPU_CHECK_HANG="tests", GPU_CHECK_SKIP="profile", BUDGET_S=str(budget)
    )
    assert proc.returncode == 1
    assert wall < budget, proc.stdout[-3000:]
    assert _order(rows) == PARTS
    closing = {r["part"]: r for r in rows if "status" in r}
    assert closing["device"]["status"] == "ok"
    hung = closing["tests"]
    assert hung["status"] == "timeout" and hung["rc"] == 124
    assert hung["seconds"] <= hung["budget_s"] + 1
    (summary,) = [r for r in rows if r["part"] == "tests" and "status" not in r]
    assert summary["source"].startswith("log") and summary["passed"] == 0
    assert closing["profile"]["status"] == "skipped"
    for name in ("train", "infer", "official"):
        assert closing[name]["status"] == "skipped", closing[name]
    assert closing["end"]["status"] == "failed"

"""The benchmark suite's quick mode runs end to end and writes its reports (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"


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

"""Sweeps through the CLI as Lightning + Hydra users run them: the Optuna sweeper
(``hparams_search=faces64_optuna``) on the objective ``train`` returns, a diverged trial reported
as failed while the study goes on, two jobs at once with the joblib launcher, one job through
submitit's local executor (the SLURM launcher's code path without a cluster)."""

from __future__ import annotations

import csv
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpen_lightning.train import TrialFailed, objective
from tests.test_distributed import cli_env

TINY = [  # 2 minibatches of 8 of the 32 px preset, SWD on 32 faces at the end
    "model=gpen-tiny-32",
    "data.synthetic_length=32",
    "model.recipe.batch_size=8",
    "model.recipe.prior_kimg=0.016",
    "model.recipe.sample_every_kimg=10",
    "model.recipe.ckpt_every_kimg=10",
    "callbacks.swd.n_images=32",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _sweep(tmp_path: Path, *overrides: str, multirun: bool = False) -> tuple[Path, str]:
    """Run ``python -m gpen_lightning [-m]`` with a sweep folder under ``tmp_path``; (folder,
    log)."""
    out = tmp_path / "sweep"
    flags = ["-m"] if multirun else []
    command = [sys.executable, "-m", "gpen_lightning", *flags, *TINY, *overrides]
    proc = subprocess.run(
        [*command, f"hydra.sweep.dir={out}"],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return out, log


def _result(**kw) -> dict:
    base = {"output_dir": "run", "diverged": False, "metrics": {}, "validation_last": None}
    return {**base, **kw}


def test_objective_is_the_metric_and_a_failed_run_raises():
    assert objective(_result(metrics={"val/swd": 3.5}), "val/swd") == 3.5
    last = _result(metrics={"val/psnr": 20.0}, validation_last={"val/psnr": 21.5})
    assert objective(last, "val/psnr") == 21.5  # the validation after training wins
    with pytest.raises(TrialFailed, match="diverged"):
        objective(_result(diverged=True, metrics={"val/swd": 3.5}), "val/swd")
    with pytest.raises(TrialFailed, match=r"val/psnr was not logged.*val/swd"):
        objective(_result(metrics={"val/swd": 3.5}), "val/psnr")
    with pytest.raises(TrialFailed, match="nan"):
        objective(_result(metrics={"val/swd": math.nan}), "val/swd")


def _swd(job: Path) -> float:
    rows = list(csv.DictReader((job / "csv" / "metrics.csv").open()))
    return float(next(r["val/swd"] for r in reversed(rows) if r.get("val/swd")))


def _overrides(job: Path) -> dict[str, str]:
    pairs = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return dict(p.split("=", 1) for p in pairs)


def test_an_optuna_sweep_of_a_tiny_preset_returns_its_best_trial(tmp_path):
    """3 TPE trials of faces64_optuna's search space: optimization_results.yaml names the trial
    with the lowest val/swd (read back from each job's CSV log) and its parameters."""
    out, _ = _sweep(
        tmp_path, "hparams_search=faces64_optuna", "hydra.sweeper.n_trials=3", "logger=csv"
    )
    jobs = sorted(p for p in out.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 3
    scores = {job: _swd(job) for job in jobs}
    best_job = min(scores, key=scores.get)
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(scores[best_job], rel=1e-6)
    chosen = _overrides(best_job)
    assert set(results["best_params"]) == {"module.lr", "module.r1_gamma", "module.augment"}
    for key, value in results["best_params"].items():
        assert str(value) == chosen[key] or float(value) == pytest.approx(float(chosen[key]))
    assert len({_overrides(j)["module.lr"] for j in jobs}) == 3  # the sampler drew 3 settings


SEARCH_WITH_A_DIVERGING_TRIAL = """# @package _global_
defaults:
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: random
optimized_metric: val/swd
hydra:
  mode: MULTIRUN
  sweeper:
    direction: minimize
    n_trials: 2
    sampler:
      seed: 0   # draws 1e30, then 0.002: the failed trial comes first and the study goes on
    max_failure_rate: 1.0
    params:
      module.lr: choice(0.002, 1e30)
"""


# A seeded random sampler, not a grid: optuna 2.10's GridSampler visits the grid in an unseeded
# order and, when a failed trial is told last, the sweeper's Study.stop() raises (RuntimeError).
def test_a_diverged_trial_is_reported_as_failed_and_the_study_goes_on(tmp_path):
    """Two trials of two learning rates, the first of which (1e30) diverges at once: that job
    fails with TrialFailed, the sweep goes on and exits 0, and the best trial is the other one."""
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "diverging_trial.yaml").write_text(SEARCH_WITH_A_DIVERGING_TRIAL)
    out, log = _sweep(
        tmp_path,
        "hparams_search=diverging_trial",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "logger=none",
        "module.max_nan_streak=1",
        "module.check_every=1",
    )
    assert "Failed experiment: the run diverged" in log
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"module.lr": 0.002}
    assert math.isfinite(results["best_value"])


def test_two_joblib_jobs_run_at_the_same_time(tmp_path):
    """``hydra/launcher=joblib`` with 2 workers: each job's span (its config written at the start,
    its exported prior at the end) overlaps the other's."""
    out, _ = _sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "logger=none",
        "callbacks.swd=null",
        "module.lr=0.001,0.002",
        multirun=True,
    )
    files = [(out / n / ".hydra" / "config.yaml", out / n / "prior.pt") for n in ("0", "1")]
    spans = [(start.stat().st_mtime, end.stat().st_mtime) for start, end in files]
    (a0, a1), (b0, b1) = spans
    assert a0 < a1 and b0 < b1
    assert a0 < b1 and b0 < a1, spans  # sequential jobs would have one end before the other began


@pytest.mark.slow
def test_submitit_local_runs_a_job_in_its_own_process(tmp_path):
    """``hydra/launcher=submitit_local``: the job runs in a process submitit starts (its folder
    is named by that job id) and its pickled result is ``train``'s."""
    out, _ = _sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "logger=none",
        "callbacks.swd=null",
        "module.lr=0.002",
        multirun=True,
    )
    (result_file,) = (out / ".submitit").glob("*/*_0_result.pkl")
    status, job_return = pickle.loads(result_file.read_bytes())
    assert status == "success"
    result = job_return.return_value
    assert result["kimg"] == pytest.approx(0.016) and not result["diverged"]
    assert Path(result["export"]).is_file() and Path(result["export"]).parent == out / "0"

"""Exact and elastic resume from the command line: a prior run killed with SIGKILL at a random
minibatch and resumed from ``last.ckpt`` ends on the weights of the run that was never stopped; a
checkpoint written by 2 processes resumes in 1 process, and one written by 1 in 2, on the same
trajectory. Every training draw is keyed by the sample's place in the global order (see
``data.sampler``); what a resume needs besides the module's state is where the epoch stood
(``FaceDataModule.state_dict``). In float64, so that the elastic cases (different reduction
orders) compare to the bit as well as the exact ones."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_distributed import EXACT, cli_env, exported, last_state, max_diff

# 8 minibatches of 8 per epoch, 24 in all (3 epochs), a checkpoint every 3, R1 and path length
# every 4
RESUME = [
    "stage=prior",
    *EXACT,
    "data.synthetic_length=64",
    "model.recipe.ckpt_every_kimg=0.024",
]
ONE = ["trainer=cpu", "model.recipe.batch_size=8"]
TWO = ["trainer=ddp_sim", "model.recipe.batch_size=4"]


def _command(run: Path, kimg: float, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gpen_lightning",
        *RESUME,
        f"model.recipe.prior_kimg={kimg}",
        *overrides,
        f"hydra.run.dir={run}",
    ]


def _run(tmp_path: Path, run: Path, kimg: float, *overrides: str) -> None:
    proc = subprocess.run(
        _command(run, kimg, *overrides),
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _kill_after(tmp_path: Path, run: Path, checkpoints: int, rng: random.Random) -> int:
    """Start the full run, SIGKILL it a random moment after its ``checkpoints``-th checkpoint;
    the minibatches the checkpoint holds."""
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _command(run, 0.192, *ONE),
        env=cli_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen, stamp, deadline = 0, None, time.monotonic() + 300
    while seen < checkpoints and time.monotonic() < deadline and proc.poll() is None:
        if last.is_file() and last.stat().st_mtime_ns != stamp:
            stamp, seen = last.stat().st_mtime_ns, seen + 1
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.2))  # somewhere in the minibatches after it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return int(last_state(run)["images_seen"]) // 8


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return exported(run / "prior.pt")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    _run(tmp, tmp / "run", 0.192, *ONE)
    return _weights(tmp / "run")


@pytest.mark.parametrize("checkpoints", [2, 5])  # killed in epoch 0, and in epoch 1 or 2
def test_a_killed_run_resumed_from_last_ckpt_ends_on_the_same_weights(
    checkpoints, uninterrupted, tmp_path
):
    run = tmp_path / "run"
    done = _kill_after(tmp_path, run, checkpoints, random.Random(checkpoints))
    assert 0 < done < 24 and done % 8 != 0  # a checkpoint inside an epoch
    _run(tmp_path, run, 0.192, *ONE, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert max_diff(_weights(run), uninterrupted) <= 1e-10


@pytest.mark.parametrize(("before", "after"), [(TWO, ONE), (ONE, TWO)], ids=["2to1", "1to2"])
def test_a_checkpoint_resumes_on_another_number_of_processes(
    before, after, uninterrupted, tmp_path
):
    """12 minibatches (an epoch and a half) on one side, the other 12 on the other, with the
    same global minibatch of 8."""
    run = tmp_path / "run"
    _run(tmp_path, run, 0.096, *before)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert int(last_state(run)["images_seen"]) == 96
    _run(tmp_path, run, 0.192, *after, f"ckpt_path={ckpt}")
    assert max_diff(_weights(run), uninterrupted) <= 1e-4

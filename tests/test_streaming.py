"""``data=streaming``: faces packed by ``stage=prepare`` train in the same global order as a folder.

Each rank's loader (LitData read in a worker) deals its share of the 1-process order and resumes
inside it. From the command line, in 2 gloo processes every training face of an epoch is seen
exactly once, half on each, with the keys 1 process gives it; they train the weights 1 process
trains (float64); a run stopped inside an epoch and resumed through ``ckpt_path`` on 2
processes continues each one's stream where it stopped and ends on the uninterrupted weights,
also when the loader is built before Lightning restores its loops (Lightning issue 20550)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from gpen_lightning.data import FaceDataModule
from tests.test_distributed import EXACT, cli_env, exported, last_state, max_diff
from tests.test_prepare import SIZE, make_faces, prepare

FACES = 64  # 58 training faces after the validation split: 7 global minibatches of 8 an epoch
WORLD, PER_RANK, SKIP = 2, 4, 3  # processes, their batch, minibatches a resumed loader skips


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("streaming")
    make_faces(tmp / "faces", FACES)
    assert prepare(tmp / "faces", tmp / "packed") == 0
    return tmp / "packed"


def _module(
    root: str, *, world: int, rank: int, batch: int, workers: int, **options
) -> FaceDataModule:
    dm = FaceDataModule(
        size=SIZE,
        root=root,
        streaming=True,
        batch_size=batch,
        num_workers=workers,
        seed=3,
        **options,
    )
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0)
    dm.setup("fit")
    return dm


def _epoch(dm: FaceDataModule, loader=None) -> list[tuple[int, int]]:
    """(dataset index, sample seed) of every training face of one epoch of ``dm``'s loader."""
    pairs = []
    for batch in loader if loader is not None else dm.train_dataloader():
        assert batch["hq"].shape[1:] == (3, SIZE, SIZE) and batch["hq"].dtype == torch.uint8
        pairs += zip(batch["index"].tolist(), batch["seed"].tolist())
    return pairs


def test_a_loader_of_each_rank_deals_the_one_process_order_and_resumes_inside_it(packed):
    """Fake ranks in this process, LitData read in a loader worker (the runs below use 0)."""
    one = _module(str(packed), world=1, rank=0, batch=PER_RANK * WORLD, workers=1)
    order = _epoch(one)  # 1 process x 8: the global order
    train = {int(i) for i in one.train_set.dataset.indices}  # KeyedItems(Subset): the split
    assert len(order) == len(set(order)) == len(train) // 8 * 8 == 56
    for rank in range(WORLD):
        dm = _module(str(packed), world=WORLD, rank=rank, batch=PER_RANK, workers=1)
        dm.load_state_dict({"batches": SKIP})
        assert _epoch(dm) == order[rank::WORLD][SKIP * PER_RANK :]


def test_a_loader_built_before_the_restore_continues_where_the_checkpoint_stopped(packed):
    """Lightning builds the loader before restoring its loops when ``estimated_stepping_batches``
    is read first (issue 20550); the datamodule's restore moves the sampler it already has."""
    args = {"world": WORLD, "rank": 1, "batch": PER_RANK, "workers": 0}
    fresh = _module(str(packed), **args)
    loader = fresh.train_dataloader()
    epochs = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        epochs.append(_epoch(fresh, loader))
    early = _module(str(packed), **args)
    loader = early.train_dataloader()  # built first, then the checkpoint (9 minibatches) restored
    early.load_state_dict({"batches": 9})
    loader.sampler.set_epoch(1)  # the epoch Lightning resumes in
    assert _epoch(early, loader) == epochs[1][2 * PER_RANK :]
    loader.sampler.set_epoch(2)
    assert _epoch(early, loader) == epochs[2] != epochs[1]


def test_a_url_streams_the_same_batches_through_the_cache_dir(packed, tmp_path):
    """LitData's ``local:`` URLs take the download path of ``s3://`` and ``gs://`` ones."""
    args = {"world": 1, "rank": 0, "batch": 8, "workers": 1}
    url = _module(f"local:{packed}", **args, cache_dir=str(tmp_path / "cache"))
    local = _module(str(packed), **args)
    pairs = list(zip(url.train_dataloader(), local.train_dataloader(), strict=True))
    assert len(pairs) == 7
    for a, b in pairs:
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["hq"], b["hq"])
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("chunk-*.bin"))
    assert cached == sorted(p.name for p in packed.glob("chunk-*.bin"))


class SeenFaces(L.Callback):
    """Records (dataset index, sample seed) of every training face a process is handed and saves
    them as ``<path>/rank<global rank>.pt`` at the end (added with ``+callbacks.seen``)."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = Path(path), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += zip(batch["index"].tolist(), batch["host_seed"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save(self.seen, self.path / f"rank{trainer.global_rank}.pt")


class ReadsSteppingBatches(L.Callback):
    """Reads ``trainer.estimated_stepping_batches`` as a scheduler in ``configure_optimizers``
    would, before Lightning restores its loops: the training loader is built then (Lightning
    issue 20550)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        assert trainer.estimated_stepping_batches > 0


def _train(tmp_path: Path, name: str, *overrides: str) -> tuple[Path, list[list]]:
    """A CLI run with ``SeenFaces``; its folder and each process's faces."""
    run, seen = tmp_path / name, tmp_path / f"{name}-seen"
    record = [f"+callbacks.seen._target_={__name__}.SeenFaces", f"+callbacks.seen.path={seen}"]
    env = {**cli_env(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "gpen_lightning", *overrides, *record, f"hydra.run.dir={run}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = sorted(seen.glob("rank*.pt"))
    return run, [torch.load(r, weights_only=False) for r in ranks]


# float64 prior runs on the packed faces: 12 global minibatches of 8 (an epoch and 5), R1 and
# path length every 4, a checkpoint after 9 (inside the second epoch) and at the end
STREAM = [
    "stage=prior",
    *EXACT,
    "data=streaming",
    "data.num_workers=0",
    "model.recipe.ckpt_every_kimg=0.072",
    "validate_first=false",
    "validate_last=false",
]
ONE = ["trainer=cpu", "model.recipe.batch_size=8"]
TWO = ["trainer=ddp_sim", "model.recipe.batch_size=4"]


def test_two_processes_see_each_face_once_train_the_same_weights_and_resume_the_stream(
    packed, tmp_path
):
    common = [*STREAM, f"data.root={packed}"]
    full = [*common, "model.recipe.prior_kimg=0.096"]
    one, (order,) = _train(tmp_path, "one", *full, *ONE)
    two, ranks = _train(tmp_path, "two", *full, *TWO)
    # 2 gloo processes: the first epoch (7 minibatches) holds each training face once, half on
    # each process, at the positions (and with the keys) of the 1-process order
    assert [len(r) for r in ranks] == [48, 48] and len(order) == 96
    epoch = [i for r in ranks for i, _ in r[: 7 * PER_RANK]]
    assert len(epoch) == len(set(epoch)) == 56
    assert {i for i, _ in order[:56]} == set(epoch)
    assert all(r == order[rank::WORLD] for rank, r in enumerate(ranks))
    weights = exported(one / "prior.pt")
    assert int(last_state(one)["images_seen"]) == int(last_state(two)["images_seen"]) == 96
    assert max_diff(weights, exported(two / "prior.pt")) <= 1e-4

    # the 1-process run's snapshot after 9 minibatches (2 into the second epoch), resumed on 2
    # processes through ckpt_path, the loader built early: each process continues its share of
    # the stream where it stopped, and they end on the same weights
    ckpt = one / "checkpoints" / "kimg_000000.072.ckpt"
    early = f"+callbacks.steps._target_={__name__}.ReadsSteppingBatches"
    resumed, rest = _train(tmp_path, "resumed", *full, *TWO, f"ckpt_path={ckpt}", early)
    assert [r == ranks[rank][9 * PER_RANK :] for rank, r in enumerate(rest)] == [True, True]
    assert int(last_state(resumed)["images_seen"]) == 96
    assert max_diff(exported(resumed / "prior.pt"), weights) <= 1e-4

"""``PhaseDDPStrategy`` and the per-phase gradient mean, in 2 gloo processes on the CPU: each phase
all-reduces exactly the gradients of the network it trains, once; the processes stay on the same
weights while they see different faces; the mean and the NaN handling are those of one process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra.utils import instantiate

from gpen_lightning.config import compose
from gpen_lightning.testing import lightning_order
from gpen_lightning.training.distributed import broadcast_module
from gpen_lightning.training.grads import sanitize_grads
from tests.test_cli import FAST

WORLD = 2


def _init(rank: int, store: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)


def _mean_and_nan(rank: int, store: str, out: str) -> None:
    _init(rank, Path(store))
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    unused = torch.nn.Parameter(torch.zeros(4))  # no gradient on rank 1: sent as zeros
    a.grad = torch.full((3,), float(rank + 1))  # ranks: 1 and 2 -> mean 1.5
    b.grad = torch.full((2, 2), float("nan") if rank == 1 else 1.0)
    if rank == 0:
        unused.grad = torch.full((4,), 2.0)
    n_bad = sanitize_grads([a, b, unused], average=True)
    torch.save(
        {"a": a.grad, "b": b.grad, "unused": unused.grad, "n_bad": n_bad}, f"{out}/{rank}.pt"
    )
    dist.destroy_process_group()


def _spawn(fn, tmp_path: Path, *args) -> list[dict]:
    mp.spawn(fn, args=(str(tmp_path / "store"), str(tmp_path), *args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]


def test_gradients_are_averaged_and_cleaned_the_same_on_every_process(tmp_path):
    results = _spawn(_mean_and_nan, tmp_path)
    for res in results:
        torch.testing.assert_close(res["a"], torch.full((3,), 1.5))
        assert torch.equal(res["b"], torch.zeros(2, 2))  # a NaN on one process: 0 on both
        torch.testing.assert_close(res["unused"], torch.full((4,), 1.0))
        assert int(res["n_bad"]) == 1


def _training(rank: int, store: str, out: str, stage: str) -> None:
    _init(rank, Path(store))
    reg = ["module.r1_gamma=10", "module.r1_every=2", "module.pl_weight=2", "module.pl_every=2"]
    cfg = compose(
        [f"stage={stage}", "model=gpen-tiny-32", "logger=none", f"paths.output_dir={out}", *reg]
        + (["module.init=none"] if stage == "finetune" else [])
    )
    torch.manual_seed(rank)  # different initial weights: the broadcast must align them
    module = instantiate(cfg.module, _convert_="all")
    lightning_order(module, "cpu")
    broadcast_module(module)
    init = {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}
    sent: list[tuple[str, int]] = []
    phase = {"name": None}
    run_phase = module._run_phase

    def tagged(record, *args, **kwargs):
        phase["name"] = record.name
        return run_phase(record, *args, **kwargs)

    all_reduce = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        sent.append((phase["name"], tensor.numel() * tensor.element_size()))
        return all_reduce(tensor, *args, **kwargs)

    average_buffers = module._average_tracked_buffers

    def tagged_buffers():
        phase["name"] = "w_avg"
        return average_buffers()

    module._run_phase = tagged
    module._average_tracked_buffers = tagged_buffers
    dist.all_reduce = counting
    gen = torch.Generator().manual_seed(100 + rank)  # each process its own faces
    face = lambda: torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1  # noqa: E731
    random.seed(0)  # the style-mixing coin, the same on both (as Lightning seeds every process)
    try:
        for step in range(3):  # 0 and 2: all four phases
            batch = {"lq": face(), "hq": face()} if stage == "finetune" else {"hq": face()}
            module.training_step(batch, step)
    finally:
        dist.all_reduce = all_reduce
    sizes = {
        "G": sum(p.numel() * 4 for p in module.trained_generator.parameters()),
        "D": sum(p.numel() * 4 for p in module.discriminator.parameters()),
        "w_avg": sum(b.numel() * 4 for n, b in module.g_ema.named_buffers() if n.endswith("w_avg")),
    }
    state = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
    torch.save({"sent": sent, "sizes": sizes, "state": state, "init": init}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", ["prior", "finetune"])
def test_each_phase_all_reduces_its_network_once_and_processes_stay_in_step(stage, tmp_path):
    results = _spawn(_training, tmp_path, stage)
    sent, sizes = results[0]["sent"], results[0]["sizes"]
    # per phase: the finite flag (4 bytes), the gradients of the trained network in one flat
    # buffer and, for path length, its running mean (4 bytes); nothing of the other network
    # after each minibatch, w_avg: one all-reduce of style_dim floats
    assert [n for name, n in sent if name == "w_avg"] == [sizes["w_avg"]] * 3
    sent = [(name, n) for name, n in sent if name != "w_avg"]
    grads = [(name, n) for name, n in sent if n > 8]
    expected = {"Dmain": sizes["D"], "Dreg": sizes["D"], "Gmain": sizes["G"], "Greg": sizes["G"]}
    assert grads == [(name, expected[name]) for name, _ in grads]
    assert [name for name, _ in grads] == [
        *("Dmain", "Dreg", "Gmain", "Greg"),
        *("Dmain", "Gmain"),
        *("Dmain", "Dreg", "Gmain", "Greg"),
    ]
    assert sum(n for _, n in sent) - sum(n for _, n in grads) == 4 * 10 + 4 * 2
    # different faces, averaged gradients: the same weights everywhere (all-reduce hands every
    # process the same sums; the tolerance only allows for that not being bitwise), w_avg too
    # (averaged after each minibatch: the global minibatch's running mean)
    a, b = (r["state"] for r in results)
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert max(diffs.values()) < 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    init = results[0]["init"]  # and they did move, each process on its own faces
    assert max((a[k] - init[k]).abs().max().item() for k in diffs) > 1e-3


# -- several nodes on one machine ---------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def test_two_nodes_on_one_machine_train_as_two_local_processes(tmp_path):
    """``trainer=multinode trainer.num_nodes=2 trainer.devices=1`` started by hand as two
    processes (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``: no SLURM) trains what
    ``trainer=ddp_sim`` (two processes that Lightning starts on one node) trains: the same ranks,
    data shards and seeds, so the same weights. Threads are pinned to one per process in both."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", GPEN_OUTPUTS=str(tmp_path / "outputs"))
    cli = [sys.executable, "-m", "gpen_lightning", *FAST]
    ref = subprocess.run(
        [*cli, "trainer=ddp_sim", f"hydra.run.dir={tmp_path / 'one-node'}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    nodes = [
        "trainer=multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        "trainer.strategy.process_group_backend=gloo",
        f"hydra.run.dir={tmp_path / 'two-nodes'}",  # one run folder for both nodes
    ]
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [*cli, *nodes],
            env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    assert "Done:" in outs[0][0] and "Done:" not in outs[1][0]  # global rank 0 reports
    a, b = last_state(tmp_path / "one-node"), last_state(tmp_path / "two-nodes")
    assert int(a["images_seen"]) == int(b["images_seen"]) >= 100
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()}
    assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


# -- world-size invariance ---------------------------------------------------------------------
# 24 minibatches of 8 with R1 and path length every 4 (6 of each), in float64: every draw is
# keyed by the sample's place in the global order (data.sampler, gpen_lightning.keyed), so 2
# processes x 4 compute what 1 process x 8 does; in float64 the different reduction orders leave
# no visible trace (in float32 Adam's eps turns their 1e-7 rounding into visible differences
# within a few minibatches: docs/scaling.md).
EXACT = [  # float64, R1 and path length every 4: the runs of the exactness tests (also resume)
    "model=gpen-tiny-32",
    "logger=none",
    "model.recipe.sample_every_kimg=10",
    "module.r1_gamma=10",
    "module.r1_every=4",
    "module.pl_weight=2",
    "module.pl_every=4",
    "trainer.precision=64-true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
INVARIANCE = [
    *EXACT,
    "data.synthetic_length=256",
    "model.recipe.prior_kimg=0.192",
    "model.recipe.finetune_kimg=0.192",
    "model.recipe.ckpt_every_kimg=10",
    "validate_first=false",
    "validate_last=false",
]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """A CLI run's environment: one thread, outputs under ``tmp_path``."""
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", GPEN_OUTPUTS=str(tmp_path / "outputs"))


def cli_run(tmp_path: Path, name: str, *overrides: str, timeout: float = 600) -> Path:
    """``python -m gpen_lightning OVERRIDES`` in ``tmp_path / name`` (its run folder, returned);
    fails the test with the run's log tail when it fails."""
    import subprocess
    import sys

    run = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "gpen_lightning", *overrides, f"hydra.run.dir={run}"],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run


def exported(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an exported ``prior.pt`` / ``gpen.pt`` (``g_ema``, ``g``, ``d``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{net}.{k}": v for net in ("g_ema", "g", "d") for k, v in blob[net].items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference of two sets of the same tensors."""
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(("stage", "export"), [("prior", "prior.pt"), ("finetune", "gpen.pt")])
def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(
    stage, export, tmp_path
):
    """``trainer=ddp_sim`` (2 gloo processes) with the per-process batch halved exports the
    weights of ``trainer=cpu`` (1 process): the same global minibatches, degradations, latents,
    noise, mixing, probes and path-length mean; another data seed moves them far more."""
    common = [f"stage={stage}", *INVARIANCE]
    if stage == "finetune":
        common.append("module.init=none")  # random prior weights: no prior run needed
    one = cli_run(tmp_path, "one", *common, "trainer=cpu", "model.recipe.batch_size=8")
    two = cli_run(tmp_path, "two", *common, "trainer=ddp_sim", "model.recipe.batch_size=4")
    a, b = exported(one / export), exported(two / export)
    seen = [last_state(run)["images_seen"] for run in (one, two)]
    assert int(seen[0]) == int(seen[1]) == 192
    same = max_diff(a, b)
    assert same <= 1e-4, same
    if stage == "prior":  # the keys matter: another data seed (same initial weights) differs
        moved = cli_run(
            tmp_path, "seed1", *common, "trainer=cpu", "model.recipe.batch_size=8", "data.seed=1"
        )
        assert max_diff(a, exported(moved / export)) > 1e-2 > 1e3 * max(same, 1e-9)

"""The device contract of the CUDA training path, proven on the CPU (no GPU needed).

On a GPU the host only queues work; anything that waits for the device (a value read back, a
blocking host-to-device copy) stalls the queue every minibatch, and a tensor left on the CPU next
to device tensors breaks the step. ``gpen_lightning.testing.audit`` records all three while the
code runs on ``meta``, the data-less stand-in for CUDA. The contract:

- a training step of either stage, every phase due (D, R1, G, path length), with the module set
  up and moved in Lightning's order (``setup`` before the move), the fine-tuning one with the
  official recipe's identity loss and the LPIPS / FID networks: no read-back, no blocking copy,
  no device mix;
- the degradation of a uint8 batch on the device (and the DataModule's pairs): the same;
- between logs, Lightning converts no logged tensor to a Python number (a read-back each);
- G and D compile to one graph each (``torch._dynamo.explain``), with and without grad;
- under CUDA bf16 autocast (fake CUDA tensors) the prior's activations stay bf16 and the
  demodulation coefficients are computed in fp32;
- D sees reals and fakes in one memory format (channels-last when ``channels_last`` is on).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo
from hydra.utils import instantiate
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import (
    _LoggerConnector,
)
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from gpen_lightning.config import compose, conf_dir
from gpen_lightning.testing import audit, fake_cuda, lightning_order, meta_stand_in
from gpen_lightning.train import train
from gpen_lightning.training.fast import set_memory_format
from gpen_lightning.zoo import build
from gpen_lightning.zoo.layers import FusedLeakyReLU, ModulatedConv2d, NoiseInjection, StyledConv

TINY = "gpen-tiny-32"
SIZE = 32
BATCH = 4


def _official_recipe() -> list[str]:
    """The ``module`` overrides of experiment=gpen512_official (the official training script:
    smooth-L1, ArcFace identity, R1, path length, no feature matching)."""
    node = OmegaConf.load(conf_dir() / "experiment" / "gpen512_official.yaml").module
    return [f"module.{k}={v}".replace(" ", "") for k, v in node.items()]


def _cfg(tmp_path: Path, stage: str, *overrides: str):
    return compose(
        [
            f"stage={stage}",
            f"model={TINY}",
            "logger=none",
            f"paths.output_dir={tmp_path}",
            *(["module.init=none"] if stage == "finetune" else []),
            *overrides,
        ]
    )


def _batch(stage: str, device: str = "meta") -> dict[str, torch.Tensor]:
    """A minibatch as ``FaceDataModule.on_after_batch_transfer`` hands it over: NCHW float in
    [-1, 1] (no data on ``meta``)."""
    image = lambda: torch.rand(BATCH, 3, SIZE, SIZE, device=device) * 2 - 1  # noqa: E731
    batch = {"lq": image(), "hq": image()} if stage == "finetune" else {"hq": image()}
    keys = {"host_seed": list(range(11, 11 + BATCH)), "host_batch_seed": [5] * BATCH}
    return {**batch, "index": torch.arange(BATCH, device=device), **keys}


# Both stages with all four phases due on minibatches 0 and 2 (R1 and path length every 2).
REGULARIZED = ["module.r1_gamma=10", "module.r1_every=2", "module.pl_weight=2", "module.pl_every=2"]


@pytest.fixture
def stage_module(request, tmp_path, irse_file, alexnet_file, inception_file):
    """(stage, module) of a parametrized ``prior`` / ``finetune_official`` / ``finetune_paper``."""
    name = request.param
    if name == "prior":
        cfg = _cfg(tmp_path, "prior", *REGULARIZED, "module.mixing_prob=0.9")
    elif name == "finetune_official":  # + the LPIPS loss and the FID metric
        cfg = _cfg(
            tmp_path,
            "finetune",
            *_official_recipe(),
            *REGULARIZED,
            f"module.id_weights={irse_file[0]}",
            "module.lpips_weight=1",
            f"module.lpips_weights={alexnet_file[0]}",
            f"module.fid_weights={inception_file}",
        )
    else:  # the paper's losses (feature matching on D's features)
        cfg = _cfg(tmp_path, "finetune", *REGULARIZED)
    module = instantiate(cfg.module, _convert_="all")
    if name == "finetune_official":
        assert set(module.aux) == {"id", "lpips", "fid"}
        weights = module.loss.weights
        assert {"id", "lpips"} <= set(weights) and not weights.get("fm"), weights
    return name.split("_")[0], module


# ------------------------------------------------------------------------------------------------
def test_the_audit_sees_read_backs_blocking_copies_and_device_mixes():
    x = torch.zeros(4, device="meta")
    with audit() as found:
        assert bool((x > 0).any()) is True  # read back: a dummy answer, the run goes on
        assert isinstance(int(x.argmax()), int) and x.tolist() == [0.0] * 4
        x[x > 0]  # data-dependent size
        x + torch.ones(4)  # device mix (carried on on the device)
        x * torch.tensor(2.0)  # a 0-d host tensor is a scalar argument: allowed
        torch.ones(4).to("meta")  # blocking copy
        torch.ones(4).to("meta", non_blocking=True)  # allowed
        x.copy_(torch.ones(4))  # blocking copy
        torch.tensor([1.0, 2.0], device="meta")  # blocking copy, below the dispatcher
    assert found.counts() == {"readbacks": 4, "blocking_copies": 3, "device_mixes": 1}
    assert all("test_contract.py:" in f.location for f in found.all()), found.report()
    assert not found.project() and len(found.external().all()) == 8


@pytest.mark.parametrize(
    "stage_module", ["prior", "finetune_official", "finetune_paper"], indirect=True
)
def test_training_step_on_the_device_never_waits_for_it(stage_module):
    """Minibatches 0-2 of a step on ``meta`` (0 and 2 run every phase), set up in Lightning's
    order: nothing is read back, nothing copied to the device blocking, no tensor left behind
    on the CPU (the frozen loss networks included)."""
    stage, module = stage_module
    lightning_order(module, "meta")
    batch = _batch(stage)
    random.seed(0)  # the style-mixing coin
    found = {}
    for step in range(3):
        with meta_stand_in(), audit() as found[step]:
            module.training_step(batch, step)
    assert module.progress["r1_steps"] == 2 and module.progress["pl_steps"] == 2
    for step, record in found.items():
        assert not record, f"{stage} minibatch {step}:\n{record.report()}"
    aux = getattr(module, "aux", {})  # identity, LPIPS, FID: FID only runs in validation
    devices = {k: {t.device.type for t in (*v.parameters(), *v.buffers())} for k, v in aux.items()}
    assert all(d == {"meta"} for d in devices.values()), f"loss networks left behind: {devices}"


@pytest.mark.parametrize("variant", ["gfpgan", "all_ops", "colorization", "inpainting"])
def test_degradation_on_the_device_never_waits_for_it(variant):
    """A uint8 batch degraded on ``meta`` twice (the first call fills kornia's caches): no
    read-back and no blocking copy, neither in the project's code nor inside kornia."""
    overrides = [f"degradation={'gfpgan' if variant == 'all_ops' else variant}"]
    if variant == "all_ops":  # every branch: motion blur, Poisson noise, colour jitter, gray
        overrides += [
            "degradation.blur_probs=[0.3,0.3,0.4]",
            "degradation.poisson_prob=0.5",
            "degradation.color_jitter_prob=0.5",
            "degradation.gray_prob=0.5",
        ]
    degradation = instantiate(compose(overrides).degradation, _convert_="all")
    hq = torch.empty(BATCH, 3, SIZE, SIZE, dtype=torch.uint8, device="meta")
    for call in range(2):
        with meta_stand_in(), audit() as found:
            out = degradation(hq, generator=torch.Generator().manual_seed(call))
        assert out["lq"].device.type == "meta" and out["lq"].dtype == torch.uint8
        assert not found.project(), f"call {call}, project code:\n{found.project().report()}"
        assert not found.external(), f"call {call}, inside kornia:\n{found.external().report()}"


@pytest.mark.parametrize("training", [True, False], ids=["training", "validation"])
def test_batch_transfer_and_pairs_never_wait_for_the_device(training, tmp_path):
    """The fine-tuning DataModule's batch path as Lightning runs it: the hook before the
    transfer (on the host), the transfer (``move_data_to_device``) and the hook after it (the
    configured degradation, or validation's fixed one, then uint8 -> [-1, 1]) on ``meta``."""
    datamodule = instantiate(_cfg(tmp_path, "finetune").data, _convert_="all")
    datamodule.trainer = SimpleNamespace(training=training, global_rank=0)
    for call in range(2):  # the second validation call reads the fixed-degradation cache
        batch = {
            "hq": torch.zeros(BATCH, 3, SIZE, SIZE, dtype=torch.uint8),
            "index": torch.arange(BATCH),
            "seed": torch.arange(BATCH) + 11,  # the training keys (data.sampler)
            "batch_seed": torch.full((BATCH,), 5),
        }
        batch = datamodule.on_before_batch_transfer(batch, 0)
        with meta_stand_in(), audit() as found:
            pairs = datamodule.on_after_batch_transfer(
                move_data_to_device(batch, torch.device("meta")), 0
            )
        assert pairs["lq"].device.type == "meta" and pairs["lq"].dtype == torch.float32
        assert not found, f"call {call}:\n{found.report()}"


# ------------------------------------------------------------------------------------------------
def test_lightning_converts_no_tensor_between_logs(tmp_path, monkeypatch):
    """Lightning turns every tensor logged with ``prog_bar=True`` into a number at the end of
    every later minibatch (``convert_tensors_to_scalars`` in its logger connector), not only when
    it was logged: one read-back each. Count the tensors read back by the logger connector's
    batch-end work on the minibatches that log nothing (log_every=3: minibatches 4 and 5, after
    the first log)."""
    reads: dict[int, list[str]] = {}
    current: list[int] = []
    shown: dict = {}

    def counting(name, original):
        def read(tensor, *args, **kwargs):
            if current:
                reads[current[0]].append(f"{name} at {_caller()}")
            return original(tensor, *args, **kwargs)

        return read

    def batch_end(original):
        def wrapper(connector, *args, **kwargs):
            current[:] = [connector.trainer.lightning_module.progress["batches"]]
            reads.setdefault(current[0], [])
            try:
                return original(connector, *args, **kwargs)
            finally:
                current.clear()
                shown.update(connector.trainer.progress_bar_metrics)

        return wrapper

    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    for hook in ("on_batch_end", "update_train_step_metrics"):
        monkeypatch.setattr(_LoggerConnector, hook, batch_end(getattr(_LoggerConnector, hook)))
    cfg = _cfg(
        tmp_path,
        "prior",
        "model.recipe.batch_size=2",
        "model.recipe.prior_kimg=0.012",  # 6 minibatches of 2
        "module.log_every=3",
        "module.check_every=3",
        "data.synthetic_length=16",
        "data.val_fraction=0",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    )
    train(cfg)
    assert {4, 5} <= set(reads), f"the minibatches did not end: {sorted(reads)}"
    quiet = {n: dict(Counter(reads[n])) for n in (4, 5)}
    assert quiet == {4: {}, 5: {}}, f"tensors read back between logs: {quiet}"
    assert {"kimg", "d", "g"} <= set(shown), f"the progress bar lost its values: {shown}"


def _caller() -> str:
    """The innermost frame outside torch and this file: who asked for the value."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if "torch" not in path.parts and path.name != "test_contract.py":
            parts = path.parts
            if "site-packages" in parts:
                return f"{'/'.join(parts[parts.index('site-packages') + 1 :])}:{frame.f_lineno}"
            return f"{path.name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


# ------------------------------------------------------------------------------------------------
def _network(name: str):
    """(callable, args, kwargs) as ``training.fast.compiled`` compiles them, channels-last as
    trained: the prior's synthesis (``CompiledPrior``), GPEN and D whole."""
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    if name == "prior_synthesis":
        prior = build(TINY, "prior")
        set_memory_format(prior, channels_last=True)
        with torch.no_grad():
            latents = prior.latents(torch.randn(BATCH, prior.style_dim))
        return prior.synthesis, (latents,), {}
    if name == "gpen":
        gpen = build(TINY, "gpen")
        set_memory_format(gpen, channels_last=True)
        return gpen, (x,), {}
    disc = build(TINY, "discriminator", stddev_group=4)
    set_memory_format(disc, channels_last=True)
    return disc, (x,), {"return_features": name == "discriminator_features"}


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize(
    "name", ["prior_synthesis", "gpen", "discriminator", "discriminator_features"]
)
def test_networks_compile_to_one_graph(name, grad):
    """The main phases run G without grad (D's fakes) and with it (G's loss); a graph break
    splits the compiled call into pieces with eager Python between them."""
    torch._dynamo.reset()
    fn, args, kwargs = _network(name)
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    torch._dynamo.reset()
    breaks = [
        f"{r.reason.strip().splitlines()[0]} at "
        f"{Path(r.user_stack[-1].filename).name}:{r.user_stack[-1].lineno}"
        for r in explanation.break_reasons
        if r.user_stack
    ]
    counts = (explanation.graph_count, explanation.graph_break_count)
    assert counts == (1, 0), f"{counts[0]} graphs, {counts[1]} breaks: {dict(Counter(breaks))}"


# ------------------------------------------------------------------------------------------------
class _Matmuls(TorchDispatchMode):
    """The dtypes of the matrix products run inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.dtypes.append(out.dtype)
        return out


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("net", ["styled_conv", "prior"])
def test_bf16_autocast_keeps_activations_bf16_and_demodulation_fp32(net, grad, monkeypatch):
    """Under ``torch.autocast("cuda", dtype=torch.bfloat16)`` (fake CUDA tensors: no GPU
    needed) the modulated convolutions, noise injections and activations output bf16 (an fp32
    one doubles the memory traffic of every later layer), and ``_demodulation`` does its sum of
    squares in fp32 as documented (autocast would run the matrix product in bf16)."""
    demodulation = ModulatedConv2d._demodulation
    demod: list[tuple[torch.dtype, list[torch.dtype]]] = []

    def recorded(self, s):
        with _Matmuls() as mm:
            out = demodulation(self, s)
        demod.append((out.dtype, mm.dtypes))
        return out

    monkeypatch.setattr(ModulatedConv2d, "_demodulation", recorded)
    outputs: list[tuple[str, torch.dtype]] = []
    with fake_cuda():
        if net == "styled_conv":
            module = StyledConv(16, 16, 3, 32)
            inputs = (torch.randn(BATCH, 16, 8, 8), torch.randn(BATCH, 32))
        else:
            module = build(TINY, "prior")
            set_memory_format(module, channels_last=True)
            inputs = (torch.randn(BATCH, module.style_dim),)
        for m in module.modules():
            if isinstance(m, ModulatedConv2d | NoiseInjection | FusedLeakyReLU):
                m.register_forward_hook(lambda m, i, o: outputs.append((type(m).__name__, o.dtype)))
        assert inputs[0].device.type == "cuda"
        with torch.set_grad_enabled(grad), torch.autocast("cuda", dtype=torch.bfloat16):
            module(*inputs)
    assert outputs and demod
    wrong = Counter(f"{name} -> {dtype}" for name, dtype in outputs if dtype != torch.bfloat16)
    assert not wrong, f"activations not in bf16: {dict(wrong)}"
    rounded = Counter(
        f"output {out}, matrix products {mm}"
        for out, mm in demod
        if out != torch.float32 or any(d != torch.float32 for d in mm)
    )
    assert not rounded, f"demodulation not computed in fp32: {dict(rounded)}"


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
@pytest.mark.parametrize("stage", ["prior", "finetune"])
def test_discriminator_sees_reals_and_fakes_in_one_memory_format(stage, channels_last, tmp_path):
    """Every D call of a training step (reals and fakes, R1 included): the layout its first layer
    computes on. Mixed layouts make the convolutions convert (a copy of every image) or pick
    slower kernels. A real CPU step: PyTorch's meta convolution always returns NCHW, its CPU and
    CUDA kernels keep channels-last."""
    flag = f"module.channels_last={str(channels_last).lower()}"
    module = instantiate(_cfg(tmp_path, stage, *REGULARIZED, flag).module, _convert_="all")
    lightning_order(module, "cpu")
    batch = _batch(stage, "cpu")
    reals = {batch["hq"].data_ptr()}  # the batch's faces, as given or as the loss hands them to D
    real = module.loss.real

    def recorded_real(b: dict) -> torch.Tensor:
        out = real(b)
        reals.add(out.data_ptr())
        return out

    module.loss.real = recorded_real
    seen: list[str] = []
    kind: list[str] = []
    disc = module.discriminator
    disc.register_forward_pre_hook(
        lambda m, args: kind.append("real" if args[0].data_ptr() in reals else "fake")
    )
    disc.convs[0].register_forward_pre_hook(
        lambda m, args: seen.append(f"{kind[-1]} {_layout(args[0])}")
    )
    module.training_step(batch, 0)
    want = "channels_last" if channels_last else "contiguous"
    assert len(seen) >= 4 and {s.split()[0] for s in seen} == {"real", "fake"}, seen
    assert all(s.endswith(want) for s in seen), f"D's first layer sees: {dict(Counter(seen))}"


def _layout(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "strided"

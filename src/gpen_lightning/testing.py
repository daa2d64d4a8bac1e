"""Device-contract helpers for tests and benchmarks: audit the CUDA code paths on any machine.

``audit()`` is a ``TorchDispatchMode`` that sees every ATen op a block runs and records what would
stall or break a GPU queue, each with the source line that caused it:

- **read-backs**: a device value reaching the host: ``aten._local_scalar_dense`` (what ``.item()``,
  ``bool()``, ``int()``, ``float()`` call), ``aten.equal``, a device-to-host copy without
  ``non_blocking=True`` (``.cpu()``, ``.tolist()``), and ops whose output size depends on the data
  (``nonzero``, ``masked_select``, ``x[mask]``);
- **blocking copies**: a host-to-device copy without ``non_blocking=True`` (``.to(device)``,
  ``copy_`` from a host tensor, ``torch.tensor(data, device=...)``). PyTorch synchronises the
  stream after such a copy whatever its size, so 0-d host tensors count too;
- **device mixes**: an op whose tensor arguments live on different devices. A 0-d host tensor is
  allowed: PyTorch hands it to a device kernel as a scalar argument, as it does a Python number
  (no copy, no sync). The copy ops themselves are audited as copies, not as mixes.

Run the code on the ``meta`` device as the stand-in for CUDA (``meta_stand_in()``): meta tensors
have shapes, dtypes and strides but no data. The mode records a read and returns a dummy instead
(``True``, ``1``, ``1.0``: the answer that lets checks pass; zeros for a copy to the host), moves
the host operands of a mixed op to the device and calls the op, so the code runs on and one run
reports every finding, not just the first.

Each ``Finding`` names the op, its ``location`` (the innermost frame inside ``gpen_lightning``,
this module excluded, else the innermost frame outside torch and Lightning) and its ``origin``
(the innermost frame outside torch and Lightning whatever its package: kornia's line when a
project call went on through kornia). ``Audit.project()`` / ``Audit.external()`` split them by
origin.

``fake_cuda()`` gives ``FakeTensorMode`` tensors on a ``cuda`` device with CUDA autocast working,
without a GPU: the dtypes a forward pass produces under ``torch.autocast("cuda")``.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import lightning as L
import torch
import torch.fx.experimental._config as _fx_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

__all__ = [
    "Audit",
    "DeviceAudit",
    "Finding",
    "audit",
    "fake_cuda",
    "lightning_order",
    "meta_stand_in",
]

aten = torch.ops.aten

_THIS = Path(__file__).resolve()
_PACKAGE = _THIS.parent
_FRAMEWORK = (Path(torch.__file__).resolve().parent, Path(L.__file__).resolve().parent)
_STDLIB = Path(threading.__file__).resolve().parent

# ops that copy between devices by design (audited as copies, not as mixes)
_COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default}
# ops whose output size depends on the data: a device sync on CUDA
_DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default}


class Finding(NamedTuple):
    """One audited event: the ATen op (or ``torch.tensor``), the project line that caused it
    (else the first line outside torch and Lightning) and the innermost line outside torch and
    Lightning (where a library call went on to do it)."""

    op: str
    location: str
    origin: str

    def __str__(self) -> str:
        via = "" if self.origin == self.location else f" (via {self.origin})"
        return f"{self.op} at {self.location}{via}"

    @property
    def external(self) -> bool:
        """Whether it originates outside ``gpen_lightning`` (inside kornia, lpips, ...)."""
        return not self.origin.startswith("gpen_lightning/")


@dataclass(repr=False)
class Audit:
    """What ``audit()`` recorded: three lists of ``Finding``."""

    readbacks: list[Finding] = field(default_factory=list)
    blocking_copies: list[Finding] = field(default_factory=list)
    device_mixes: list[Finding] = field(default_factory=list)

    def all(self) -> list[Finding]:
        return [f for found in vars(self).values() for f in found]

    def counts(self) -> dict[str, int]:
        """``{"readbacks", "blocking_copies", "device_mixes"}``: how many of each."""
        return {kind: len(found) for kind, found in vars(self).items()}

    def project(self) -> Audit:
        """The findings that originate in ``gpen_lightning`` itself."""
        return self._filter(lambda f: not f.external)

    def external(self) -> Audit:
        """The findings that originate inside a library (kornia, lpips, torchmetrics, ...)."""
        return self._filter(lambda f: f.external)

    def _filter(self, keep: Callable[[Finding], bool]) -> Audit:
        return Audit(**{kind: [f for f in found if keep(f)] for kind, found in vars(self).items()})

    def report(self, *, limit: int = 40) -> str:
        """The findings grouped by site (op and lines) with their counts, for messages."""
        lines = []
        for name, found in (
            ("read-backs", self.readbacks),
            ("blocking host-to-device copies", self.blocking_copies),
            ("device mixes", self.device_mixes),
        ):
            sites = Counter(str(f) for f in found)
            lines.append(f"{len(found)} {name} at {len(sites)} sites")
            lines += [f"  {n} x {site}" for site, n in list(sites.items())[:limit]]
            if len(sites) > limit:
                lines.append(f"  ... and {len(sites) - limit} more sites")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "Audit({})".format(", ".join(f"{k}={v}" for k, v in self.counts().items()))

    def __bool__(self) -> bool:
        """True when anything was found."""
        return bool(self.all())


@functools.cache
def _place(filename: str) -> tuple[str, bool, bool]:
    """(short name, inside gpen_lightning, skipped: torch, Lightning, stdlib or this file)."""
    path = Path(filename).resolve()
    if path.is_relative_to(_PACKAGE):
        name = f"gpen_lightning/{path.relative_to(_PACKAGE).as_posix()}"
        return name, path != _THIS, path == _THIS
    parts = path.parts
    installed = "site-packages" in parts or "dist-packages" in parts
    skipped = (
        filename.startswith("<")
        or (path.is_relative_to(_STDLIB) and not installed)
        or any(path.is_relative_to(root) for root in _FRAMEWORK)
    )
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :]), False, skipped
    return str(path), False, skipped


def _where() -> tuple[str, str]:
    """(location, origin) of the op being dispatched, from the Python stack."""
    frame = sys._getframe(1)
    origin = location = None
    while frame is not None and location is None:
        name, project, skipped = _place(frame.f_code.co_filename)
        if not skipped:
            here = f"{name}:{frame.f_lineno} ({frame.f_code.co_name})"
            origin = origin or here
            location = here if project else None
        frame = frame.f_back
    unknown = "<no Python frame>"
    return location or origin or unknown, origin or unknown


def _dummy(dtype: torch.dtype) -> Any:
    """A stand-in for a value read from a data-less tensor: the answer that lets checks pass."""
    if dtype == torch.bool:
        return True
    if dtype.is_floating_point or dtype.is_complex:
        return 1.0
    return 1


def _host_scalar(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dim() == 0


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor)]


def _bool_indexed(func, args: tuple) -> bool:
    """``x[mask]``: an index with a boolean mask runs ``nonzero`` (a device sync on CUDA)."""
    return func is aten.index.Tensor and any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
    )


class DeviceAudit(TorchDispatchMode):
    """The dispatch mode behind ``audit()`` (see the module docs); records into ``record``."""

    def __init__(self, record: Audit | None = None) -> None:
        super().__init__()
        self.record = record if record is not None else Audit()

    def _note(self, kind: list[Finding], func) -> None:
        kind.append(Finding(str(func), *_where()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.record
        if func is aten._local_scalar_dense.default or func is aten.equal.default:
            tensors = _tensors(args)
            if any(t.device.type != "cpu" for t in tensors):
                self._note(rec.readbacks, func)
                if any(t.device.type == "meta" for t in tensors):
                    return True if func is aten.equal.default else _dummy(args[0].dtype)
            return func(*args, **kwargs)
        if func in _DATA_DEPENDENT or _bool_indexed(func, args):
            if args[0].device.type != "cpu":
                self._note(rec.readbacks, func)
                if args[0].device.type == "meta":  # as if every element were selected
                    if func is aten.masked_select.default:
                        return args[0].new_empty(torch.broadcast_shapes(*(a.shape for a in args)))
                    with _fx_config.patch(meta_nonzero_assume_all_nonzero=True):
                        return func(*args, **kwargs)
            return func(*args, **kwargs)
        if func is aten._to_copy.default:
            src = args[0]
            dst = torch.device(kwargs["device"]) if kwargs.get("device") else src.device
            return self._copy(func, src, dst, bool(kwargs.get("non_blocking")), args, kwargs)
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            return self._copy(func, src, dst.device, bool(non_blocking), args, kwargs)
        if func not in _COPIES:
            devices = {t.device for t in _tensors((args, kwargs)) if not _host_scalar(t)}
            if len(devices) > 1:
                self._note(rec.device_mixes, func)
                target = next(d for d in devices if d.type != "cpu")

                def join(x: Any) -> Any:  # carry on: host operands join the device
                    mixed = isinstance(x, torch.Tensor) and x.device != target
                    return x.to(target) if mixed and not _host_scalar(x) else x

                args, kwargs = tree_map(join, args), tree_map(join, kwargs)
        return func(*args, **kwargs)

    def _copy(self, func, src: torch.Tensor, dst: torch.device, non_blocking: bool, args, kwargs):
        if src.device.type == "cpu" and dst.type != "cpu" and not non_blocking:
            self._note(self.record.blocking_copies, func)
        if src.device.type != "cpu" and dst.type == "cpu":
            if not non_blocking:
                self._note(self.record.readbacks, func)
            if src.device.type == "meta":  # no data to copy: zeros of the right layout
                if func is aten.copy_.default:
                    return args[0].zero_()
                return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
        return func(*args, **kwargs)


def _creating(factory: Callable, name: str, record: Audit) -> Callable:
    """``torch.tensor`` / ``torch.as_tensor`` that also record a blocking copy when host data is
    put on a device: PyTorch copies it below the dispatcher, out of a dispatch mode's sight."""

    @functools.wraps(factory)
    def wrapper(data, *args, **kwargs):
        device = kwargs.get("device")
        device = torch.device(device) if device is not None else torch.get_default_device()
        on_device = isinstance(data, torch.Tensor) and data.device == device
        if device.type != "cpu" and not on_device:
            record.blocking_copies.append(Finding(name, *_where()))
        return factory(data, *args, **kwargs)

    return wrapper


@contextmanager
def audit(record: Audit | None = None) -> Iterator[Audit]:
    """Record the read-backs, blocking host-to-device copies and device mixes of the block.

    >>> with meta_stand_in(), audit() as found:
    ...     module.training_step(batch, 0)
    >>> assert not found, found.report()
    """
    mode = DeviceAudit(record)
    factories = {"tensor": torch.tensor, "as_tensor": torch.as_tensor}
    try:
        for name, factory in factories.items():
            setattr(torch, name, _creating(factory, f"torch.{name}", mode.record))
        with mode:
            yield mode.record
    finally:
        for name, factory in factories.items():
            setattr(torch, name, factory)


_TorchGenerator = torch.Generator


class _Generator(_TorchGenerator):
    """``torch.Generator`` whose ``device="meta"`` is a CPU generator: meta has no RNG, and the
    random ops of meta tensors accept a CPU generator (they draw nothing)."""

    def __new__(cls, device: torch.device | str | int | None = None) -> torch.Generator:
        if device is None or torch.device(device).type == "meta":
            return _TorchGenerator()
        return _TorchGenerator(device)


def _cuda_like(original: Callable) -> Callable:
    """kornia's ``_to_device_nonblocking`` applying its CUDA rule (a host tensor goes over with
    ``non_blocking=True``) to ``meta`` too."""

    @functools.wraps(original)
    def wrapper(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None):
        if tensor.device.type == "cpu" and torch.device(device).type == "meta":
            if dtype is not None and dtype != tensor.dtype:
                tensor = tensor.to(dtype=dtype)
            return tensor.to(device=device, non_blocking=True)
        return original(tensor, device, dtype)

    return wrapper


@contextmanager
def meta_stand_in() -> Iterator[None]:
    """Let code written for CUDA run on ``meta`` as it would on CUDA, for ``audit()``:

    - ``torch.Generator(device="meta")`` is a CPU generator (meta has none; see ``_Generator``);
    - kornia's non-blocking transfer helper (``kornia.core.utils._to_device_nonblocking``), which
      sends host tensors with ``non_blocking=True`` to CUDA only, treats meta as CUDA.
    """
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch, "Generator", _Generator))
        from kornia.core import utils as kornia_utils

        helper = getattr(kornia_utils, "_to_device_nonblocking", None)
        if helper is not None:
            for name, module in list(sys.modules.items()):
                if (
                    name.startswith("kornia")
                    and getattr(module, "_to_device_nonblocking", None) is helper
                ):
                    stack.enter_context(
                        mock.patch.object(module, "_to_device_nonblocking", _cuda_like(helper))
                    )
        yield


@contextmanager
def fake_cuda() -> Iterator[None]:
    """``FakeTensorMode`` with ``cuda`` as the default device and CUDA autocast on, without a GPU.

    Modules built and tensors made inside live on a fake ``cuda:0`` (shapes, dtypes, strides; no
    data); ``torch.autocast("cuda", dtype=torch.bfloat16)`` casts as on a GPU (its availability
    checks are patched: they ask the driver). Forward passes only: backward asks the driver too.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    with (
        mock.patch("torch.cuda.amp.common.amp_definitely_not_available", return_value=False),
        mock.patch("torch.cuda.is_bf16_supported", return_value=True),
        FakeTensorMode(allow_non_fake_inputs=True),
        torch.device("cuda"),
    ):
        yield


def lightning_order(
    module: L.LightningModule, device: torch.device | str = "meta", **trainer_kwargs: Any
) -> L.Trainer:
    """Make ``module`` ready for direct ``training_step`` calls on ``device``, in Lightning's
    order: ``setup("fit")`` and ``configure_model()`` run while the module is still on the CPU,
    then the module moves to ``device``, then ``configure_optimizers()``. A real (unfitted)
    ``Trainer`` on the CPU is attached, its strategy holding the optimizers, so ``optimizers()``,
    ``toggle_optimizer``, ``manual_backward`` and the optimizer steps work as in ``fit``."""
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    module.trainer = trainer
    trainer.strategy.connect(module)
    module.setup("fit")
    module.configure_model()
    module.to(device)
    optimizers = module.configure_optimizers()
    trainer.strategy.optimizers = (
        list(optimizers) if isinstance(optimizers, tuple | list) else [optimizers]
    )
    return trainer

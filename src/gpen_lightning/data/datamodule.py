"""``FaceDataModule``: uint8 HQ faces from the workers, degraded on the device after transfer.

Training batches follow one global sample order whatever the number of processes
(``data.sampler``); each face is flipped and degraded from its own key, so N processes with batch
B/N see and degrade exactly what one process with batch B does."""

from __future__ import annotations

import os

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from gpen_lightning.data.degradation import Degradation
from gpen_lightning.data.folder import FaceFolder
from gpen_lightning.data.sampler import GlobalOrderSampler, KeyedItems
from gpen_lightning.data.seeds import stream_seed
from gpen_lightning.data.streaming import StreamingFaces
from gpen_lightning.data.synthetic import SyntheticFaces
from gpen_lightning.keyed import keyed_seeds
from gpen_lightning.ranges import to_signed

__all__ = ["DEGRADE", "FaceDataModule", "degrade_each", "degrade_fixed", "stack_faces"]

DEGRADE = 2  # the salt of a training face's degradation seed: mix(sample seed, DEGRADE)
KEYS = ("seed", "batch_seed")  # the per-sample keys of training batches (see data.sampler)


class FaceDataModule(L.LightningDataModule):
    """HQ faces -> ``{"lq", "hq", "params"}`` batches in [-1, 1], degraded where the batch lives.

    Args:
        size: model size S.
        root: folder of HQ faces; ``None`` uses ``SyntheticFaces`` (no data needed).
        val_root: separate validation folder; otherwise ``val_fraction`` of the data, split with
            ``split_seed``.
        synthetic_length: number of synthetic faces when ``root`` is None.
        batch_size, val_batch_size, num_workers: loader settings.
        degradation: the training degradation (GFPGAN model by default).
        val_degradation: for validation (default: the training one), applied with a fixed seed
            per sample so validation metrics are comparable across runs.
        seed: seeds the training order and every training face's flip and degradation (by its
            position in the global order: the same for any number of processes).
        verify: fully decode every folder image at setup (report corrupt files up front).
        degrade: False yields ``{"hq", "index"}`` batches only (the prior stage needs no LQ).
        val_cache_mb: keep each validation face's fixed degradation (uint8, on the batch's
            device) up to this many MiB, so later validations skip the degradation (it is the
            same every time; at 32 px it was 58 % of a validation); 0 turns the cache off.
        streaming: ``root`` (and ``val_root``) are ``stage=prepare`` outputs, folders or
            object-store URLs, read through LitData (``data.streaming.StreamingFaces``) in the
            same global order.
        cache_dir, max_cache_size: where LitData keeps downloaded chunks and how much (streaming
            from a URL).
    """

    def __init__(
        self,
        *,
        size: int = 64,
        root: str | os.PathLike[str] | None = None,
        val_root: str | os.PathLike[str] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        synthetic_length: int = 512,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        degradation: Degradation | None = None,
        val_degradation: Degradation | None = None,
        seed: int = 0,
        val_seed: int = 1234,
        verify: bool = False,
        degrade: bool = True,
        val_cache_mb: float = 256,
        streaming: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        max_cache_size: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.size, self.root, self.val_root = size, root, val_root
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.synthetic_length = synthetic_length
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.degradation = degradation if degradation is not None else Degradation()
        self.val_degradation = val_degradation or self.degradation
        self.seed, self.val_seed, self.verify = seed, val_seed, verify
        self.degrade = degrade
        self.streaming, self.cache_dir, self.max_cache_size = streaming, cache_dir, max_cache_size
        if streaming and root is None:
            raise ValueError("data.streaming needs data.root: a stage=prepare output (folder, URL)")
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.val_cache_mb = val_cache_mb
        self._val_cache: FixedCache | None = None
        # global minibatches trained so far: where the run stands in the global order, saved in
        # checkpoints (state_dict) so that a resumed run continues it exactly
        self.trained_batches = 0
        self.train_sampler: GlobalOrderSampler | None = None  # the last training loader's

    def state_dict(self) -> dict[str, int]:
        """``{"batches"}``: the global minibatches trained so far (the data epoch and the place
        in it follow, every epoch holding the same number of whole global minibatches)."""
        return {"batches": self.trained_batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the training loader (the next, or one already built) continues after
        ``state["batches"]`` minibatches."""
        self.trained_batches = int(state["batches"])
        if self.train_sampler is not None:
            self.train_sampler.seek(self.trained_batches)

    def _dataset(self, root) -> Dataset:
        """The faces under ``root``, never flipped: KeyedItems flips training faces by key."""
        if root is None:
            return SyntheticFaces(size=self.size, length=self.synthetic_length, flip=False)
        if self.streaming:
            return StreamingFaces(
                root, size=self.size, cache_dir=self.cache_dir, max_cache_size=self.max_cache_size
            )
        return FaceFolder(root, size=self.size, flip=False, verify=self.verify)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_full = self._dataset(self.root)
        if self.val_root is not None:
            self.train_set = KeyedItems(train_full, flip=True)
            self.val_set = self._dataset(self.val_root)
        else:
            n = len(train_full)
            n_val = round(n * self.val_fraction)
            if self.val_fraction > 0 and (n_val < 1 or n_val >= n):
                raise ValueError(f"cannot split {n} images with val_fraction={self.val_fraction}")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            self.train_set = KeyedItems(Subset(train_full, order[n_val:].tolist()), flip=True)
            # validation reads the same files without random flips
            self.val_set = Subset(train_full, order[:n_val].tolist())

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        sampler = None
        if train:
            trainer = self.trainer
            sampler = GlobalOrderSampler(
                dataset,
                batch_size=self.batch_size,
                world_size=trainer.world_size if trainer is not None else 1,
                rank=trainer.global_rank if trainer is not None else 0,
                seed=self.seed,
            )
            sampler.seek(self.trained_batches)
            # kept to be moved by load_state_dict: Lightning may build the loader before it
            # restores the datamodule (estimated_stepping_batches, Lightning issue 20550)
            self.train_sampler = sampler
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.val_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def make_pairs(self, batch: dict, *, train: bool) -> dict:
        """uint8 HQ batch -> ``{"lq", "hq", "params"}`` in [-1, 1] on the batch's device."""
        hq = batch["hq"]
        if train:
            if "host_seed" not in batch:
                raise KeyError(
                    "a training batch needs its per-sample keys ('seed', 'batch_seed': "
                    "GlobalOrderSampler and KeyedItems, as train_dataloader() builds them) and "
                    "their host copies (on_before_batch_transfer)"
                )
            out = degrade_each(self.degradation, hq, keyed_seeds(batch["host_seed"], DEGRADE))
        else:
            indices = batch.get("host_index", batch["index"])  # host list: no read-back
            out = degrade_fixed(
                self.val_degradation, hq, indices, seed=self.val_seed, cache=self._cache()
            )
        return {
            "lq": to_signed(out["lq"], 255),
            "hq": to_signed(out["hq"], 255),
            "params": out["params"],
            "index": batch["index"],
            **_host_keys(batch),
        }

    def _cache(self) -> FixedCache:
        """The validation cache, new whenever the validation set, degradation or seed changed."""
        key = (self.val_set, self.val_degradation, self.val_seed)
        if self._val_cache is None or self._val_cache.key != key:
            self._val_cache = FixedCache(self.val_cache_mb, key=key)
        return self._val_cache

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Keep the dataset indices and the training keys as host lists too: the degradations
        and the training step's draws are seeded from them, and reading them back from the device
        would stall its queue."""
        if not isinstance(batch, dict):
            return batch
        for key in ("index", *KEYS):
            if isinstance(batch.get(key), torch.Tensor):
                batch = {**batch, f"host_{key}": batch[key].tolist()}
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        train = self.trainer is not None and self.trainer.training
        if train:  # one more minibatch (counted as it is handed to the training step)
            self.trained_batches += 1
        if not self.degrade:
            out = {"hq": to_signed(batch["hq"], 255), "index": batch["index"], **_host_keys(batch)}
        else:
            out = self.make_pairs(batch, train=train)
        if getattr(self.trainer, "precision", None) == "64-true":
            # Lightning converts a batch before this hook, when it is still uint8
            out = self.trainer.precision_plugin.convert_input(out)
        return out


class FixedCache:
    """Per-index outputs of ``degrade_fixed`` up to ``max_mb`` MiB (the first ones that fit)."""

    def __init__(self, max_mb: float, *, key: tuple = ()) -> None:
        self.max_bytes, self.used, self.key = int(max_mb * 2**20), 0, key
        self.items: dict[int, dict] = {}

    def get(self, index: int, device: torch.device) -> dict | None:
        part = self.items.get(index)
        if part is None or part["lq"].device == device:
            return part
        params = {k: v.to(device) for k, v in part["params"].items()}
        return {"lq": part["lq"].to(device), "hq": part["hq"].to(device), "params": params}

    def put(self, index: int, part: dict) -> None:
        tensors = [part["lq"], part["hq"], *part["params"].values()]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if self.used + size <= self.max_bytes:
            self.items[index] = part
            self.used += size


def _host_keys(batch: dict) -> dict:
    """The host lists of the training keys a batch carries (``host_seed``, ``host_batch_seed``)."""
    return {f"host_{k}": batch[f"host_{k}"] for k in KEYS if f"host_{k}" in batch}


def degrade_each(
    degradation: Degradation,
    hq: torch.Tensor,
    seeds: list[int],
    *,
    cache: FixedCache | None = None,
    keys: list[int] | None = None,
) -> dict:
    """Degrade each sample with its own seed: a face's LQ depends on its seed alone, not on the
    batch it is in. ``cache`` holds outputs by ``keys`` (one per sample) and returns those it has
    instead of degrading again."""
    parts = []
    for i, seed in enumerate(seeds):
        part = cache.get(keys[i], hq.device) if cache is not None else None
        if part is None:
            part = degradation(hq[i : i + 1], seed=seed)
            if cache is not None:
                cache.put(keys[i], part)
        parts.append(part)
    return {
        "lq": torch.cat([p["lq"] for p in parts]),
        "hq": torch.cat([p["hq"] for p in parts]),
        "params": {k: torch.cat([p["params"][k] for p in parts]) for k in parts[0]["params"]},
    }


def degrade_fixed(
    degradation: Degradation,
    hq: torch.Tensor,
    indices: torch.Tensor | list[int],
    *,
    seed: int,
    cache: FixedCache | None = None,
) -> dict:
    """Degrade each sample with its own seed derived from ``seed`` and its dataset index: the
    same LQ for a face in every run, whatever the batch size and order (validation, evaluation).
    ``cache`` (for one dataset, one degradation and one seed) returns the faces it holds instead.
    """
    indices = indices.tolist() if isinstance(indices, torch.Tensor) else [int(i) for i in indices]
    seeds = [stream_seed(seed, i) for i in indices]
    return degrade_each(degradation, hq, seeds, cache=cache, keys=indices)


def stack_faces(dataset, n: int | None = None) -> torch.Tensor:
    """The HQ faces of the first ``n`` items (all by default) of a face dataset as one float batch
    (n, 3, S, S) in [-1, 1] (the metric sets of SWD)."""
    n = len(dataset) if n is None else min(n, len(dataset))
    return to_signed(torch.stack([dataset[i]["hq"] for i in range(n)]), 255)

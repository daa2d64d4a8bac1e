"""One global sample order for any number of processes, and items that carry their key.

``GlobalOrderSampler`` shuffles the epoch's indices once, from the seed and the epoch alone, and
hands process ``rank`` of ``world_size`` the positions ``rank, rank + world_size, ...``: what
``DistributedSampler`` does, but with one process too, so 1 process x batch B and N processes x
batch B/N see the same global minibatches (N interleaved slices of them, which is also how
StyleGAN2's minibatch-stddev groups ``view(G, -1, ...)`` stride a batch). Every position carries
its key: the sample's seed (``mix(seed, epoch, position)``) and its global minibatch's; a
``KeyedItems`` dataset turns the ``(index, sample seed, minibatch seed)`` triples the sampler yields
into items with ``"seed"`` and ``"batch_seed"``, and flips each face by its own seed. Every random
draw of a training step (degradation, latents, noise, probes) then comes from those keys
(``gpen_lightning.keyed``), never from a process's own stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

from gpen_lightning.keyed import mix

__all__ = ["FLIP", "GlobalOrderSampler", "KeyedItems"]

FLIP = 1  # the salt of the flip coin in mix(sample seed, salt)


class GlobalOrderSampler(DistributedSampler):
    """Process ``rank``'s share of one seeded global order (a ``DistributedSampler``, so
    Lightning neither replaces nor wraps it under DDP, and calls ``set_epoch`` each epoch).

    Args:
        dataset: the map-style dataset (its length is used).
        batch_size: samples per minibatch of one process; the global minibatch is
            ``batch_size * world_size``, and only whole global minibatches are kept.
        world_size, rank: the processes and this one's global rank.
        seed: the order and the keys' seed.
        epoch: the data epoch it starts in.
        start: global minibatches of ``epoch`` already trained (a resumed run): they are not
            handed out again. A later epoch starts from its beginning.
        epoch_offset: data epoch minus Lightning's epoch (``set_epoch`` gets Lightning's, which
            counts from wherever its loop resumed, e.g. a new epoch after a run that stopped
            inside one). None: set by the first ``set_epoch``, whose epoch is the one
            ``epoch`` / ``start`` (or ``seek``) resume in; it does not matter whether the loader
            was built before or after Lightning restored its loops.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        epoch_offset: int | None = 0,
    ) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.epoch, self.start, self.epoch_offset = epoch, start, epoch_offset
        self.global_batch = batch_size * world_size
        n = len(dataset)  # type: ignore[arg-type]
        if n < self.global_batch:
            raise ValueError(
                f"{n} training samples cannot fill one global minibatch of {self.global_batch} "
                f"({batch_size} per process x {world_size}); lower data.batch_size"
            )
        self.num_samples = n // self.global_batch * batch_size
        self.total_size = self.num_samples * world_size
        if not 0 <= start * self.global_batch <= self.total_size:
            raise ValueError(f"start={start} minibatches is outside an epoch of this data")

    def seek(self, batches: int) -> None:
        """Continue after ``batches`` global minibatches from the first epoch's start (a resumed
        run); the next ``set_epoch`` is taken to be the epoch they end in."""
        self.epoch, self.start = divmod(batches, self.total_size // self.global_batch)
        self.epoch_offset = None

    def set_epoch(self, epoch: int) -> None:
        """Lightning's epoch ``epoch`` is data epoch ``epoch + epoch_offset``."""
        if self.epoch_offset is None:
            self.epoch_offset = self.epoch - epoch
        if epoch + self.epoch_offset != self.epoch:
            self.start = 0  # the resumed epoch is over
        super().set_epoch(epoch + self.epoch_offset)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        gen = torch.Generator().manual_seed(mix(self.seed, self.epoch))
        order = torch.randperm(len(self.dataset), generator=gen)[: self.total_size].tolist()
        first = self.start * self.global_batch + self.rank
        for position in range(first, self.total_size, self.num_replicas):
            yield (
                order[position],
                mix(self.seed, self.epoch, position),
                mix(self.seed, self.epoch, position // self.global_batch, 1),
            )

    def __len__(self) -> int:
        """A whole epoch, also when resuming inside one: Lightning counts the epoch's batches
        from its own restored progress (``num_training_batches`` is read once)."""
        return self.num_samples


class KeyedItems(Dataset):
    """Items of ``dataset`` addressed by ``GlobalOrderSampler``'s triples: the item plus its
    ``"seed"`` and ``"batch_seed"``, horizontally flipped when ``flip`` and its own coin say so.
    A plain index returns the dataset's item as it is."""

    def __init__(self, dataset: Dataset, *, flip: bool) -> None:
        self.dataset, self.flip = dataset, flip

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int] | int) -> dict:
        if isinstance(key, int):  # a plain index (e.g. the SWD callback's reals): no keys, no flip
            return self.dataset[key]
        index, seed, batch_seed = key
        item = dict(self.dataset[index])
        if self.flip and mix(seed, FLIP) & 1:
            item["hq"] = item["hq"].flip(-1)
        item["seed"], item["batch_seed"] = seed, batch_seed
        return item

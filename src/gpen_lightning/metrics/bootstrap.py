"""Confidence intervals for per-image scores: the percentile bootstrap of a mean, and of the mean
paired difference of two methods scored on the same images (is one better than the other, beyond
the luck of which faces were drawn?)."""

from __future__ import annotations

import torch

__all__ = ["bootstrap_ci", "interval_table", "paired_difference", "paired_table"]


def bootstrap_ci(
    values: torch.Tensor, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval of the mean of ``values`` (N,): the means of
    ``resamples`` resamples with replacement (seeded), cut at (1 - level) / 2 and (1 + level) / 2.
    One value gives a zero-width interval; NaNs are refused."""
    x = values.detach().double().flatten().cpu()
    if x.numel() == 0 or torch.isnan(x).any():
        raise ValueError("bootstrap_ci needs at least one value and no NaN")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, x.numel(), (resamples, x.numel()), generator=gen)
    means = x[picks].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return lo, hi


def paired_difference(a: torch.Tensor, b: torch.Tensor, **kwargs) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of ``a - b`` over the same images (N,), with ``bootstrap_ci``'s
    interval (keywords passed on): an interval that excludes 0 says the two differ."""
    if a.shape != b.shape:
        raise ValueError(
            f"paired scores need the same images: {tuple(a.shape)} vs {tuple(b.shape)}"
        )
    diff = a.detach().double().cpu() - b.detach().double().cpu()
    return float(diff.mean()), *bootstrap_ci(diff, **kwargs)


def interval_table(
    per_face: dict[str, dict[str, torch.Tensor]], **kwargs
) -> dict[str, dict[str, list[float]]]:
    """``{method: {metric: [lo, hi]}}``: each cell's ``bootstrap_ci`` (keywords passed on) over
    its finite values (a face LMD did not find is NaN); a cell with none has no interval."""
    table = {}
    for method, scores in per_face.items():
        finite = {k: v[torch.isfinite(v)] for k, v in scores.items()}
        table[method] = {k: list(bootstrap_ci(v, **kwargs)) for k, v in finite.items() if len(v)}
    return table


def paired_table(
    per_face: dict[str, dict[str, torch.Tensor]], method: str, baselines: list[str], **kwargs
) -> dict[str, dict[str, list[float]]]:
    """``{"<method> - <baseline>": {metric: [mean, lo, hi]}}``: ``paired_difference`` of
    ``method`` against each baseline on every metric they share, over the faces where both
    are finite."""
    table = {}
    for base in baselines:
        row = {}
        for k in (k for k in per_face[method] if k in per_face[base]):
            a, b = per_face[method][k], per_face[base][k]
            both = torch.isfinite(a) & torch.isfinite(b)
            if both.any():
                row[k] = list(paired_difference(a[both], b[both], **kwargs))
        table[f"{method} - {base}"] = row
    return table

"""Our FID and LPIPS against the reference implementations, on the same random stand-in weights
(no pretrained file is needed): a markdown table of feature and score differences on real faces.

    python benchmarks/metric_agreement.py                      # ../shared faces-hq, 256 px, all
    python benchmarks/metric_agreement.py --faces DIR --size 512 --n 32 --degrade blur:2

FID: ``metrics.fid.InceptionFeatures`` (torch-fidelity's port of the TF 2015-12-05 graph, TF1
bilinear resize) and pytorch-fid's ``InceptionV3([3], use_fid_inception=True)`` (torchvision's
Inception patched to the same graph) get the same seeded weights: a torch-fidelity state dict
with random convolutions and random BatchNorm affine and running statistics, mapped tensor by
tensor onto pytorch-fid's blocks (each used once). Compared: 2048-d pool features and
FID(HQ, degraded) on the same 299 px input, and each with its own preprocessing (ours: uint8,
TF1 bilinear, ``(x - 128) / 128``; pytorch-fid: ``ToTensor``, ``F.interpolate`` bilinear,
``2x - 1``), and the Frechet formula itself (ours: eigenvalues of S1 S2; pytorch-fid: scipy's
``sqrtm``). LPIPS: ``losses.networks.load_lpips`` on a seeded torchvision AlexNet file against
``lpips.LPIPS(net="alex", pnet_rand=True)`` with the same backbone copied in by hand.

pytorch-fid is not a project dependency: ``pip install --no-deps --target /tmp/reffid
pytorch-fid`` (it is found there, or set ``--reference-path``).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image, ImageFilter

from gpen_lightning.losses.networks import load_lpips
from gpen_lightning.metrics.fid import FidStatistics, frechet_distance, load_inception

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-hq"
INSTALL = "pip install --no-deps --target /tmp/reffid pytorch-fid"

# pytorch-fid's InceptionV3 blocks -> the module names of torch-fidelity's (and the TF graph's)
BLOCKS = [
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None],
    ["Conv2d_3b_1x1", "Conv2d_4a_3x3", None],
    [
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
    ],
    ["Mixed_7a", "Mixed_7b", "Mixed_7c", None],
]


# -- faces --------------------------------------------------------------------------------------
def degrade(image: Image.Image, spec: str) -> Image.Image:
    """``jpeg:Q`` (PIL, quality Q) or ``blur:SIGMA`` (PIL Gaussian blur)."""
    kind, _, value = spec.partition(":")
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(value))
        return Image.open(buffer).convert("RGB")
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(float(value)))
    raise ValueError(f"--degrade must be jpeg:Q or blur:SIGMA, got {spec!r}")


def write_sets(faces: Path, out: Path, *, size: int, n: int, spec: str) -> dict[str, list[Path]]:
    """PNG folders ``hq``, ``lq`` (degraded) at ``size`` px and their 299 px copies
    (``hq299``, ``lq299``: PIL bicubic, the shared input of the same-input comparison)."""
    files = sorted(p for p in faces.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if len(files) < 2:
        raise SystemExit(f"{faces}: need at least 2 faces, found {len(files)}")
    sets: dict[str, list[Path]] = {k: [] for k in ("hq", "lq", "hq299", "lq299")}
    for name in sets:
        (out / name).mkdir(parents=True)
    for file in files[:n]:
        hq = Image.open(file).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
        for name, image in (("hq", hq), ("lq", degrade(hq, spec))):
            image.save(out / name / f"{file.stem}.png")
            sets[name].append(out / name / f"{file.stem}.png")
            small = image.resize((299, 299), Image.Resampling.BICUBIC)
            small.save(out / f"{name}299" / f"{file.stem}.png")
            sets[f"{name}299"].append(out / f"{name}299" / f"{file.stem}.png")
    return sets


def read_uint8(files: list[Path]) -> torch.Tensor:
    """(N, 3, H, W) uint8, as the scorer feeds ``InceptionFeatures``."""
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files]
    return torch.stack(images).permute(0, 3, 1, 2).contiguous()


# -- FID ----------------------------------------------------------------------------------------
def standin_inception(path: Path, *, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights in torch-fidelity's layout, saved to ``path``: He-normal
    convolutions, BatchNorm weight U(0.5, 1.5), bias and running mean N(0, 0.2^2), running
    variance U(0.5, 2), so that every tensor of the file shapes the features."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as Inc

    with (  # the graph without torch-fidelity's download of its weights
        mock.patch.object(Inc, "load_state_dict", lambda self, sd: None),
        mock.patch(
            "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
            lambda *a, **k: {},
        ),
    ):
        net = Inc("inception-v3-compat", ["2048"])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=gen)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0, 0.2, generator=gen)
                module.running_mean.normal_(0, 0.2, generator=gen)
                module.running_var.uniform_(0.5, 2.0, generator=gen)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.01, generator=gen)
                module.bias.zero_()
    state = net.state_dict()
    torch.save(state, path)
    return state


def import_pytorch_fid(extra: str | None):
    for where in (extra, "/tmp/reffid"):
        if where and Path(where).is_dir() and where not in sys.path:
            sys.path.append(where)
    try:
        import pytorch_fid.fid_score
        import pytorch_fid.inception
    except ImportError:
        raise SystemExit(f"pytorch-fid is missing: {INSTALL} (or --reference-path DIR)") from None
    return pytorch_fid


def reference_inception(pytorch_fid, state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, int]:
    """pytorch-fid's ``InceptionV3([3])`` holding ``state`` (torch-fidelity names), mapped by
    ``BLOCKS``: every reference tensor from one file tensor of the same shape, every file tensor
    used once (``fc``, the 1008 logits, is not part of the pool features). Returns the network
    and the number of tensors mapped."""
    with mock.patch.object(
        pytorch_fid.inception, "load_state_dict_from_url", lambda *a, **k: state
    ):
        net = pytorch_fid.inception.InceptionV3([3], use_fid_inception=True).eval()
    mapped, used = {}, set()
    for key, tensor in net.state_dict().items():
        _, block, index, rest = key.split(".", 3)
        source = f"{BLOCKS[int(block)][int(index)]}.{rest}"
        if source in used or state[source].shape != tensor.shape:
            raise AssertionError(f"{key} <- {source}: reused or shape {tuple(state[source].shape)}")
        mapped[key] = state[source]
        used.add(source)
    unused = set(state) - used
    if unused != {"fc.weight", "fc.bias"}:
        raise AssertionError(f"file tensors left unmapped: {sorted(unused)}")
    net.load_state_dict(mapped, strict=True)
    for key, tensor in net.state_dict().items():
        assert torch.equal(tensor, mapped[key]), key
    return net, len(mapped)


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max |a - b| and that over max |a|."""
    diff = float((a.double() - b.double()).abs().max())
    return diff, diff / float(a.double().abs().max())


def exact_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance of features (N, D) without a D x D square root: with
    ``S_a = A^T A``, ``S_b = B^T B`` (A, B the centred features over sqrt(N - 1)), the trace of
    ``(S_a S_b)^1/2`` is the sum of the singular values of ``A B^T`` (N_a x N_b). Accurate to
    float64 round-off also when the covariances are singular (fewer images than dimensions),
    where the D x D routes lose about sqrt(eps) per null dimension."""
    a, b = a.double(), b.double()
    ca = (a - a.mean(0)) / (len(a) - 1) ** 0.5
    cb = (b - b.mean(0)) / (len(b) - 1) ** 0.5
    inner = torch.linalg.svdvals(ca @ cb.T).sum()
    diff = (a.mean(0) - b.mean(0)).square().sum()
    return float(diff + ca.square().sum() + cb.square().sum() - 2 * inner)


def fid_rows(sets, *, weights: Path, seed: int, batch: int, reference: str | None) -> list[str]:
    pytorch_fid = import_pytorch_fid(reference)
    state = standin_inception(weights, seed=seed)
    ours = load_inception(weights)
    ref, n_tensors = reference_inception(pytorch_fid, state)

    def ref_fid(features: dict[str, np.ndarray]) -> float:
        mu, sigma = {}, {}
        for name, act in features.items():
            mu[name], sigma[name] = np.mean(act, axis=0), np.cov(act, rowvar=False)
        fd = pytorch_fid.fid_score.calculate_frechet_distance
        return float(fd(mu["hq"], sigma["hq"], mu["lq"], sigma["lq"]))

    def our_fid(features: dict[str, torch.Tensor]) -> float:
        return frechet_distance(FidStatistics.of(features["hq"]), FidStatistics.of(features["lq"]))

    def ref_features(x: torch.Tensor) -> torch.Tensor:
        return ref(x)[0].flatten(1)

    same_ours, same_ref, own_ours, own_ref, resize_ref = {}, {}, {}, {}, {}
    for name in ("hq", "lq"):
        # u / 256 -> pytorch-fid's 2x - 1 = (u - 128) / 128, our normalisation, bit for bit
        small = read_uint8(sets[f"{name}299"])
        same_ours[name] = batched(ours, small, batch)
        same_ref[name] = batched(ref_features, small.double().div(256).float(), batch)
        full = read_uint8(sets[name])
        own_ours[name] = batched(ours, full, batch)
        resize_ref[name] = batched(ref_features, full.double().div(256).float(), batch)
        acts = pytorch_fid.fid_score.get_activations(
            [str(f) for f in sets[name]], ref, batch_size=batch, dims=2048, num_workers=0
        )
        own_ref[name] = torch.from_numpy(acts)
    rows = [
        f"| Inception tensors mapped | {n_tensors} (+ `fc`, unused) | {n_tensors} | one to one |"
    ]
    for label, a, b in (
        ("same 299 px input", same_ours, same_ref),
        ("each its own resize to 299, same normalisation", own_ours, resize_ref),
        ("each its own preprocessing", own_ours, own_ref),
    ):
        diff, rel = compare(torch.cat([a["hq"], a["lq"]]), torch.cat([b["hq"], b["lq"]]))
        rows.append(f"| pool features, {label} | | | max abs {diff:.2e} ({rel:.1e} of max) |")
        ours_fd = our_fid(a)
        ref_fd = ref_fid({k: v.numpy() for k, v in b.items()})
        rows.append(
            f"| FID(HQ, degraded), {label} | {ours_fd:.6g} | {ref_fd:.6g} | "
            f"{ours_fd - ref_fd:+.2e} ({(ours_fd - ref_fd) / ref_fd:+.1e} relative) |"
        )
    formula_ours = our_fid(same_ours)
    formula_ref = ref_fid({k: v.numpy() for k, v in same_ours.items()})
    exact = exact_fid(same_ours["hq"], same_ours["lq"])
    rows.append(
        f"| Frechet formula on the same features (float64; exact {exact:.6f}) | {formula_ours:.6f} "
        f"| {formula_ref:.6f} | ours {(formula_ours - exact) / exact:+.1e}, "
        f"pytorch-fid {(formula_ref - exact) / exact:+.1e} relative to exact |"
    )
    return rows


# -- LPIPS --------------------------------------------------------------------------------------
def lpips_rows(sets, *, weights: Path, seed: int, batch: int) -> list[str]:
    import lpips as lpips_lib
    import torchvision

    torch.manual_seed(seed)
    alexnet = torchvision.models.alexnet(weights=None)
    state = alexnet.state_dict()
    torch.save(state, weights)
    ours = load_lpips(weights, "alex")
    ref = lpips_lib.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        for stage in (m for n, m in ref.net.named_children() if n.startswith("slice")):
            for index, layer in stage.named_children():
                for name, tensor in layer.named_parameters():
                    tensor.copy_(state[f"features.{index}.{name}"])
    hq, lq = (read_uint8(sets[k]).float() / 127.5 - 1 for k in ("hq", "lq"))
    pair = torch.stack([hq, lq], 1)
    a = batched(lambda p: ours(p[:, 0], p[:, 1]).flatten(), pair, batch)
    b = batched(lambda p: ref(p[:, 0], p[:, 1]).flatten(), pair, batch)
    diff, _ = compare(a, b)
    return [
        f"| LPIPS(face, degraded), mean of {len(a)} | {float(a.mean()):.6f} | "
        f"{float(b.mean()):.6f} | max abs {diff:.1e} per pair |"
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, default=SHARED_FACES, help="a folder of faces")
    parser.add_argument("--size", type=int, default=256, help="faces resized to this (px)")
    parser.add_argument("--n", type=int, default=86, help="the first N faces")
    parser.add_argument("--degrade", default="jpeg:20", help="jpeg:Q or blur:SIGMA")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stand-in weights")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reference-path", help="a folder holding pytorch_fid (pip --target)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = write_sets(args.faces, tmp, size=args.size, n=args.n, spec=args.degrade)
        kw = dict(seed=args.seed, batch=args.batch)
        lpips = lpips_rows(sets, weights=tmp / "alexnet-standin.pth", **kw)
        fid = fid_rows(
            sets, weights=tmp / "inception-standin.pth", reference=args.reference_path, **kw
        )
        rows = fid + lpips
    n = len(sets["hq"])
    print(
        f"{n} faces of {args.faces} at {args.size} px, degraded by {args.degrade}; "
        f"stand-in weights seed {args.seed}\n"
    )
    print("| quantity | ours | reference (pytorch-fid / lpips) | difference |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""Optional loss/metric networks from local files (small random stand-ins, no downloads)."""

from __future__ import annotations

import pytest
import torch

from gpen_lightning.config import compose
from gpen_lightning.losses import MissingWeightsError, identity_loss
from gpen_lightning.losses.networks import IRSE, load_identity, load_lpips
from gpen_lightning.metrics import load_fid
from gpen_lightning.train import train
from gpen_lightning.training import FinetuneModule

TINY = {"name": "gpen-tiny-32", "size": 32, "noise_mode": "concat"}


def test_ir_se50_layout_matches_the_official_file():
    widths = [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3
    with torch.device("meta"):
        state = IRSE(widths).state_dict()
    assert state["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert state["body.23.res_layer.5.fc2.weight"].shape == (512, 32, 1, 1)
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert "body.1.shortcut_layer.0.weight" not in state  # identity units pool, no params


def test_identity_network_round_trip_and_loss(irse_file):
    path, ref = irse_file
    net = load_identity(path)
    x = torch.rand(3, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(net(x), ref(x))
    assert torch.allclose(net(x).norm(dim=1), torch.ones(3))
    faces = torch.rand(2, 3, 64, 64) * 2 - 1
    assert identity_loss(net, faces, faces).abs().item() < 1e-5
    other = torch.rand(2, 3, 64, 64) * 2 - 1
    assert identity_loss(net, faces, other).item() > 1e-3


def test_lpips_loads_the_backbone_from_the_file(alexnet_file):
    path, features = alexnet_file
    lpips = load_lpips(path, "alex")
    torch.testing.assert_close(lpips.net.slice1[0].weight, features[0].weight)
    torch.testing.assert_close(lpips.net.slice5._modules["10"].weight, features[10].weight)
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert lpips(x, x).abs().max().item() < 1e-6
    assert (lpips(x, y) > 0).all()


def test_missing_weight_files_say_which_and_how():
    with pytest.raises(MissingWeightsError, match=r"model_ir_se50\.pth"):
        FinetuneModule(model=TINY, init=None, id_weight=1.0)
    with pytest.raises(MissingWeightsError, match=r"/nope/ir\.pth does not exist"):
        FinetuneModule(model=TINY, init=None, id_weight=1.0, id_weights="/nope/ir.pth")
    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79\.pth"):
        FinetuneModule(model=TINY, init=None, lpips_weight=1.0)
    with pytest.raises(MissingWeightsError, match="weights-inception"):
        load_fid("/nope/inception.pth")


def test_lpips_equals_the_torchmetrics_port(alexnet_file):
    """The reference lpips network and torchmetrics' port agree on the same backbone weights."""
    from torchmetrics.functional.image.lpips import _LPIPS

    path, features = alexnet_file
    ours = load_lpips(path, "alex")
    port = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
    for stage in (m for n, m in port.net.named_children() if n.startswith("slice")):
        for idx, layer in stage.named_children():
            layer.load_state_dict(features[int(idx)].state_dict())
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), port(x, y), atol=1e-5, rtol=1e-5)


def test_identity_and_lpips_terms_in_the_generator_loss(irse_file, alexnet_file):
    module = FinetuneModule(
        model=TINY,
        init=None,
        id_weight=0.7,
        id_weights=str(irse_file[0]),
        lpips_weight=0.3,
        lpips_weights=str(alexnet_file[0]),
    )
    assert not any(k.startswith(("aux", "id", "lpips")) for k in module.state_dict())
    lq, hq = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    total, _ = module.loss.g_main({"lq": lq, "hq": hq})
    terms, _ = module.loss.generator_terms({"lq": lq, "hq": hq})
    assert set(terms) == {"adv", "content", "fm", "id", "lpips"}
    expected = terms["adv"] + terms["content"] + 0.02 * terms["fm"]
    expected = expected + 0.7 * terms["id"] + 0.3 * terms["lpips"]
    torch.testing.assert_close(total, expected)
    total.backward()
    assert module.gpen.final_linear[0].weight.grad is not None


def test_validation_reports_lpips_and_fid_when_configured(alexnet_file, inception_file, tmp_path):
    cfg = compose(
        [
            "stage=finetune",
            "logger=csv",
            f"paths.output_dir={tmp_path}",
            "module.init=none",
            f"module.lpips_weights={alexnet_file[0]}",
            f"module.fid_weights={inception_file}",
            "model.recipe.finetune_kimg=0.02",
            "data.synthetic_length=40",
            "data.val_fraction=0.2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
        ]
    )
    result = train(cfg)
    first, last = result["validation_first"], result["validation_last"]
    for metrics in (first, last):
        assert metrics["val/lpips"] > 0 and metrics["val/fid"] > 0
    assert last["val/fid"] != first["val/fid"]


def test_face_crop_112_follows_the_official_crop():
    """Official IDLoss at 512 px: x[:, :, 70:-66, 64:-72], adaptive-average-pooled to 112."""
    from gpen_lightning.losses.networks import face_crop_112

    x = torch.rand(2, 3, 512, 512)
    ref = torch.nn.functional.adaptive_avg_pool2d(x[:, :, 70:-66, 64:-72], (112, 112))
    torch.testing.assert_close(face_crop_112(x), ref, rtol=0, atol=0)
    small = torch.rand(2, 3, 64, 64)  # tiny presets: resized to 256 first, same region
    assert face_crop_112(small).shape == (2, 3, 112, 112)

"""The restore knobs, each with a measured effect: min_face_size, only_center_face, draw_boxes,
face_upscale and alpha (fidelity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpen_lightning.config import compose
from gpen_lightning.data.synthetic import render_face
from gpen_lightning.restore import Detection, Paste, Restorer, template
from gpen_lightning.restore.detect import Face

H, W = 300, 400
BIG = (136, 86, 128)  # x0, y0, side: the central face
SMALL = (16, 16, 72)  # the face in the corner


def _face_at(x0: float, y0: float, side: float) -> Face:
    """A face whose aligned crop is exactly the square (x0, y0, side)."""
    pts = template("ffhq", 512) * side / 512 + [x0, y0]
    return Face(np.array([x0, y0, x0 + side, y0 + side], np.float32), pts.astype(np.float32), 0.99)


class TwoFaces:
    def __call__(self, image):
        return [_face_at(*SMALL), _face_at(*BIG)]


def _scene() -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    for (x, y, s), seed in ((BIG, 1), (SMALL, 3)):
        img[y : y + s, x : x + s] = render_face(s, torch.Generator().manual_seed(seed)).permute(
            1, 2, 0
        )
    return img


def _invert(x: torch.Tensor) -> torch.Tensor:
    return -x


def _restorer(net=_invert, size: int = 128, **kw) -> Restorer:
    detection = {k: kw.pop(k) for k in ("min_face_size", "only_center_face") if k in kw}
    return Restorer(
        net,
        size=size,
        device="cpu",
        detection=Detection(detector=TwoFaces(), **detection),
        paste=Paste(small_face=0, **kw),
    )


def _region(img: np.ndarray, box: tuple[int, int, int], inset: float = 0.3) -> np.ndarray:
    x, y, s = box
    d = round(s * inset)
    return img[y + d : y + s - d, x + d : x + s - d].astype(np.float64)


def _changed(out: np.ndarray, img: np.ndarray, box) -> float:
    return float(np.abs(_region(out, box) - _region(img, box)).mean())


def test_min_face_size_leaves_small_faces_untouched():
    img = _scene()
    both = _restorer().restore(img)
    assert len(both.faces) == 2 and _changed(both.image, img, SMALL) > 50
    big_only = _restorer(min_face_size=100).restore(img)
    assert len(big_only.faces) == 1
    assert _changed(big_only.image, img, BIG) > 50
    assert _changed(big_only.image, img, SMALL) == 0


def test_only_center_face_restores_the_central_face():
    img = _scene()
    out = _restorer(only_center_face=True).restore(img)
    assert len(out.faces) == 1
    assert out.faces[0].box[0] == BIG[0]
    assert _changed(out.image, img, BIG) > 50 and _changed(out.image, img, SMALL) == 0


def test_draw_boxes_outlines_each_face_and_changes_nothing_else():
    img = _scene()
    plain = _restorer().restore(img).image
    drawn = _restorer(draw_boxes=True).restore(img).image
    diff = np.any(plain != drawn, axis=-1)
    for x, y, s in (BIG, SMALL):
        edge = drawn[y, x + 5 : x + s - 5]  # the box's top edge
        assert (edge == [0, 255, 0]).all(axis=-1).mean() > 0.8
    mask = np.zeros_like(diff)
    for x, y, s in (BIG, SMALL):
        mask[max(y - 4, 0) : y + s + 5, max(x - 4, 0) : x + s + 5] = True
    assert diff.any() and not diff[~mask].any()  # box lines and landmark dots only


def _checker(x: torch.Tensor) -> torch.Tensor:
    """A 'network' that draws detail at its full resolution: a 2 px checkerboard."""
    s = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    board = ((yy // 2 + xx // 2) % 2).float() * 1.6 - 0.8
    return board.expand_as(x).clone()


def _detail(img: np.ndarray, box, scale: int) -> float:
    """High-frequency energy of the face region: mean |Laplacian|."""
    x, y, s = (v * scale for v in box)
    g = img[y + s // 4 : y + 3 * s // 4, x + s // 4 : x + 3 * s // 4].astype(np.float64).mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())


def test_face_upscale_pastes_faces_at_the_output_resolution():
    img = _scene()
    sharp = _restorer(_checker, size=256, upscale=2).restore(img)
    soft = _restorer(_checker, size=256, upscale=2, face_upscale=False).restore(img)
    assert sharp.image.shape == soft.image.shape == (2 * H, 2 * W, 3)
    detail_sharp, detail_soft = _detail(sharp.image, BIG, 2), _detail(soft.image, BIG, 2)
    assert detail_sharp > 2 * detail_soft, (detail_sharp, detail_soft)
    # away from the faces both are the same bicubic upscale
    np.testing.assert_allclose(sharp.image[-40:, -100:], soft.image[-40:, -100:], atol=1)


def test_alpha_blends_restored_and_original_faces():
    img = _scene()
    outs = {a: _restorer(alpha=a).restore(img).image.astype(np.float64) for a in (0.0, 0.5, 1.0)}
    assert _changed(outs[0.0], img, BIG) < 2  # alpha 0: the input face (resampled twice)
    assert _changed(outs[1.0], img, BIG) > 50
    mid = (_region(outs[0.0], BIG) + _region(outs[1.0], BIG)) / 2
    assert np.abs(_region(outs[0.5], BIG) - mid).max() <= 1.0  # linear in alpha


def test_restore_stage_passes_the_knobs(tmp_path):
    from gpen_lightning.app import build_stage

    cfg = compose(
        [
            "stage=restore",
            "model=gpen-tiny-64",
            "input=x.png",
            f"output={tmp_path}",
            "min_face_size=40",
            "only_center_face=true",
            "face_upscale=false",
            "draw_boxes=true",
            "alpha=0.3",
        ]
    )
    r = build_stage(cfg).restorer(device="cpu")
    knobs = (r.detection.min_face_size, r.detection.only_center_face, r.paste.face_upscale)
    assert (*knobs, r.paste.draw_boxes, r.paste.alpha) == (
        40,
        True,
        False,
        True,
        pytest.approx(0.3),
    )

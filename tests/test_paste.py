"""Paste-back masks and the seam measure: the landmark hull against the template square."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpen_lightning.restore import Detection, Paste, Restorer, template
from gpen_lightning.restore.paste import face_mask, hull_mask, inverse_warp_roi, seam_energy

from .test_knobs import BIG, SMALL, TwoFaces, _scene


def test_hull_mask_covers_the_face_and_fades_inside_the_crop():
    pts = template("ffhq", 256)
    m = hull_mask(256, pts)[0, 0]
    assert m.shape == (256, 256)
    for x, y in pts:  # the landmarks are well inside
        assert m[round(y), round(x)] > 0.99
    assert m[:20].max() < 1e-3 and m[:, :20].max() < 1e-3 and m[-10:].max() < 1e-3
    fade = ((m > 0.02) & (m < 0.98)).float().mean()
    assert 0.02 < fade < 0.3  # feathered, not a hard edge
    assert 0.15 < m.mean() < 0.5  # the face, not the whole square (the template's covers 0.8)
    assert face_mask(256).mean() > 0.75


def test_hull_mask_follows_the_landmarks():
    pts = template("ffhq", 256)
    c = np.array([128.0, 128.0])
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = (pts - c) @ rot.T + c
    a, b = hull_mask(256, pts)[0, 0].numpy(), hull_mask(256, turned)[0, 0].numpy()
    # b is a rotated by 20 degrees about the centre: compare at rotated sample positions
    yy, xx = np.mgrid[40:216:4, 40:216:4]
    src = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    dst = np.round((src - c) @ rot.T + c).astype(int)
    np.testing.assert_allclose(b[dst[:, 1], dst[:, 0]], a[yy.ravel(), xx.ravel()], atol=0.12)


def test_seam_energy_is_zero_without_a_difference_and_linear_in_it():
    bg = torch.rand(3, 64, 64)
    mask = face_mask(64)[0]
    assert seam_energy(bg, bg, mask) == 0.0
    one, two = seam_energy(bg, bg + 0.1, mask), seam_energy(bg, bg + 0.2, mask)
    assert one > 0 and two == pytest.approx(2 * one, rel=1e-5)


def _tone(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2 * 0.9 + 0.08) * 2 - 1


def test_the_hull_leaves_a_smaller_seam_than_the_square():
    image = torch.from_numpy(_scene()).permute(2, 0, 1)
    seams = {}
    for kind in ("template", "hull"):
        restorer = Restorer(
            _tone,
            size=128,
            device="cpu",
            detection=Detection(detector=TwoFaces()),
            paste=Paste(paste_mask=kind),
        )
        faces, crops, matrices = restorer._plan(image)
        masks = restorer.masks(faces, matrices).expand(len(faces), -1, -1, -1)
        restored = (_tone(crops) + 1) / 2
        values = []
        for f, m, mat in zip(restored, masks, matrices):
            patch, (y0, y1, x0, x1) = inverse_warp_roi(torch.cat([f, m]), mat, *image.shape[1:])
            bg = image[:, y0:y1, x0:x1].float() / 255
            values.append(seam_energy(bg, patch[:3], patch[3:].clamp(0, 1)))
        seams[kind] = float(np.mean(values))
    assert seams["hull"] < 0.7 * seams["template"], seams
    # and the output differs from the input only inside each face's hull
    restorer = Restorer(_tone, size=128, device="cpu", detection=Detection(detector=TwoFaces()))
    out = restorer.restore(image).image
    diff = np.abs(out.astype(int) - _scene().astype(int)).sum(-1)
    for x, y, s in (BIG, SMALL):
        assert diff[y + s // 2, x + s // 2] > 10  # the face centre changed
        assert diff[y + 2, x + 2] == 0  # the crop's corner did not

"""The web app's page (``gr.Blocks``): a Photo tab (upload or paste, before/after slider, the
aligned faces, downloads) and a Video tab, sharing one set of controls and one loaded network.
Each action is also an HTTP API endpoint: ``/restore`` (photo file first, the controls after
it) and ``/restore_video``. Uploads reach the handlers as the uploaded bytes (``preprocess``
off): they are checked and decoded once, by ``handlers.read_image``, never re-encoded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from gpen_lightning.restore.tasks import TASKS
from gpen_lightning.serve.handlers import RequestError, Workspace, restore_clip, restore_photo
from gpen_lightning.serve.models import Models, RequestOptions

__all__ = ["AppSettings", "build_app", "upload_path"]

log = logging.getLogger(__name__)

TITLE = "GPEN face restoration"
_PROGRESS = gr.Progress(track_tqdm=True)  # the video's frame bar (tqdm) shown in the page


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """What the page's handlers need besides the network.

    Args:
        max_pixels: refuse photos (and frames) whose input or output has more pixels.
        frames_per_batch: video frames whose faces share network calls.
        crf: x264 / VP9 quality of restored clips.
        cache_seconds: uploads and the copies Gradio serves are deleted once this old (checked
            every ten minutes at most).
    """

    max_pixels: int = 25_000_000
    frames_per_batch: int = 8
    crf: int = 18
    cache_seconds: int = 3600


def upload_path(payload: Any) -> str | None:
    """The file an unprocessed upload names: a path, a ``FileData`` dict (``path``) or a
    ``VideoData`` dict (``video.path``); None when nothing was uploaded."""
    if payload is None or isinstance(payload, str | Path):
        return None if payload is None else str(payload)
    if isinstance(payload, dict):
        if isinstance(payload.get("video"), dict):
            return upload_path(payload["video"])
        return payload.get("path")
    raise RequestError(f"unexpected upload value {type(payload).__name__}")


def _notes(lines: list[str]) -> str:
    warn = ("RANDOM", "blurred", "stopped early")
    return "\n\n".join(f"⚠️ {x}" if any(w in x for w in warn) else x for x in lines)


def _controls(models: Models) -> dict[str, gr.components.Component]:
    """The restoration controls shared by both tabs (their values are the API's arguments)."""
    default = models.key(models.default)
    return {
        "alpha": gr.Slider(0, 1, value=1.0, step=0.05, label="Fidelity (alpha: 1 = restored only)"),
        "upscale": gr.Slider(1, 4, value=1, step=0.5, label="Upscale"),
        "only_center_face": gr.Checkbox(value=False, label="Only the centre face"),
        "min_face_size": gr.Slider(0, 512, value=0, step=8, label="Minimum face size (px)"),
        "bg_upsampler": gr.Radio(
            list(models.upsamplers), value="bicubic", label="Background upsampler"
        ),
        "paste_mask": gr.Radio(
            ["hull", "template"], value="hull", label="Paste mask (hull: face region)"
        ),
        "model": gr.Dropdown(models.choices(), value=default, label="Network (weights)"),
        "aligned": gr.Checkbox(value=False, label="Aligned face (the photo is one face crop)"),
        "task": gr.Radio(
            list(TASKS),
            value="restore",
            label="Task (colorization, inpainting, seg2face: aligned crops, their own weights)",
        ),
    }


def _as_page_error(err: Exception) -> gr.Error:
    """A handler's error as the page's message (and the API client's)."""
    log.info("request refused: %s", err)
    return gr.Error(str(err), duration=None, title="Cannot restore this upload")


def _handle(run, upload, model, alpha, upscale, only_center_face, min_face_size, bg_upsampler,
            paste_mask, aligned=False, task="restore"):  # fmt: skip
    """``run`` (``restore_photo`` / ``restore_clip`` with the app's settings) on one request: the
    upload, the picked network and the controls' values (None: their default); refusals become
    the page's error."""
    try:
        options = RequestOptions(
            aligned=bool(aligned),
            task=str(task or "restore"),
            alpha=float(alpha),
            upscale=float(upscale),
            only_center_face=bool(only_center_face),
            min_face_size=float(min_face_size or 0),
            bg_upsampler=str(bg_upsampler or "bicubic"),
            paste_mask=str(paste_mask or "hull"),
        )
        return run(upload_path(upload), options=options, choice=model)
    except (RequestError, ValueError, TypeError, FileNotFoundError) as err:
        raise _as_page_error(err) from None


def _photo_fn(models: Models, workspace: Workspace, settings: AppSettings):
    run = partial(restore_photo, models, workspace=workspace, max_pixels=settings.max_pixels)

    def restore(image, alpha=1.0, upscale=1.0, only_center_face=False, min_face_size=0.0,
                bg_upsampler="bicubic", paste_mask="hull", model=None, aligned=False,
                task="restore"):  # fmt: skip
        """Restore the faces of a photo (or an aligned face, for any task); returns the
        restored PNG, the before/after pair, the faces, their zip and notes."""
        r = _handle(run, image, model, alpha, upscale, only_center_face, min_face_size,
                    bg_upsampler, paste_mask, aligned, task)  # fmt: skip
        return str(r.image), (r.before, r.after), r.faces, str(r.archive), _notes(r.notes)

    return restore


def _video_fn(models: Models, workspace: Workspace, settings: AppSettings):
    run = partial(restore_clip, models, workspace=workspace, max_pixels=settings.max_pixels,
                  frames_per_batch=settings.frames_per_batch, crf=settings.crf)  # fmt: skip

    def restore_video(video, alpha=1.0, upscale=1.0, only_center_face=False, min_face_size=0.0,
                      bg_upsampler="bicubic", paste_mask="hull", model=None, aligned=False,
                      task="restore", progress=_PROGRESS):  # fmt: skip
        """Restore the faces of every frame of a clip; returns the clip and notes."""
        if task not in (None, "restore") or aligned:
            err = RequestError("clips are restored as whole frames: task=restore, not aligned")
            raise _as_page_error(err)
        r = _handle(run, video, model, alpha, upscale, only_center_face, min_face_size,
                    bg_upsampler, paste_mask)  # fmt: skip
        return str(r.video), _notes(r.notes)

    return restore_video


def _header(models: Models) -> None:
    gr.Markdown(
        f"# {TITLE}\nUpload or paste a photo (or a clip in the Video tab) and press **Restore**. "
        "Everything runs on this server; nothing is sent elsewhere."
    )
    if models.random:
        gr.Markdown(
            "⚠️ **No trained weights found: the network has RANDOM weights** "
            f"(preset {models.model}); its faces are noise. Start the app with `weights=PATH`, "
            "`weights=latest` or `weights_dir=FOLDER`.",
            elem_id="random-weights",
        )


def _photo_tab(controls: list, fn) -> None:
    with gr.Tab("Photo"), gr.Row():
        with gr.Column():
            image = gr.Image(
                type="filepath",
                sources=["upload", "clipboard"],
                label="Photo",
                elem_id="photo-in",
            )
            button = gr.Button("Restore", variant="primary", elem_id="restore-photo")
        with gr.Column():
            slider = gr.ImageSlider(label="Before / after", elem_id="photo-out", format="png")
            notes = gr.Markdown(elem_id="photo-notes")
            gallery = gr.Gallery(
                label="Aligned faces: input | restored",
                columns=2,
                height=260,
                object_fit="contain",
                format="png",
            )
            photo_file = gr.File(label="Restored photo (PNG)", elem_id="photo-file")
            faces_zip = gr.File(label="Faces (zip)")
    button.click(
        fn,
        inputs=[image, *controls],
        outputs=[photo_file, slider, gallery, faces_zip, notes],
        api_name="restore",
        preprocess=False,
    )


def _video_tab(controls: list, fn) -> None:
    with gr.Tab("Video"), gr.Row():
        with gr.Column():
            video = gr.Video(sources=["upload"], label="Clip", format=None, elem_id="video-in")
            button = gr.Button("Restore clip", variant="primary", elem_id="restore-video")
        with gr.Column():
            out = gr.Video(label="Restored clip (with its audio)", format=None)
            notes = gr.Markdown(elem_id="video-notes")
    button.click(
        fn,
        inputs=[video, *controls],
        outputs=[out, notes],
        api_name="restore_video",
        preprocess=False,
    )


def build_app(models: Models, workspace: Workspace, settings: AppSettings) -> gr.Blocks:
    """The page: header (with the random-weights warning when there are no weights), the
    controls, the Photo and Video tabs; endpoints ``/restore`` and ``/restore_video``."""
    cache = (min(600, settings.cache_seconds), settings.cache_seconds)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache) as demo:
        _header(models)
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                gr.Markdown("### Options")
                named = _controls(models)
                info = gr.Markdown(models.describe(), elem_id="model-info")
                controls = list(named.values())
            with gr.Column(scale=3), gr.Tabs():
                _photo_tab(controls, _photo_fn(models, workspace, settings))
                _video_tab(controls, _video_fn(models, workspace, settings))
        named["model"].change(_describe_fn(models), named["model"], info, api_name="describe")
    return demo


def _describe_fn(models: Models):
    def describe(model=None):
        """The picked network's weights and face size (loads it)."""
        try:
            return models.describe(model)
        except (ValueError, FileNotFoundError) as err:
            raise _as_page_error(err) from None

    return describe

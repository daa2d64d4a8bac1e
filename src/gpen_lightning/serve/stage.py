"""``stage=serve`` as an object: ``ServeStage`` holds the options of ``conf/serve.yaml`` and runs
the web app (``serve.app``) until interrupted. Everything the server writes stays in ``output``:
``results/`` (per-request outputs, the newest ``keep_results`` kept) and ``gradio/`` (uploads and
the copies Gradio serves; removed when the server stops). No analytics, nothing fetched."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpen_lightning.config import options_for

__all__ = ["ServeStage", "parse_auth"]


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``(user, password)``; None: no login."""
    if not auth:
        return None
    user, sep, password = str(auth).partition(":")
    if not sep or not user or not password:
        raise ValueError(f"auth={auth!r}: give user:password (or null for no login)")
    return user, password


@dataclass(kw_only=True)
class ServeStage:
    """The serve stage's options; ``conf/serve.yaml`` documents each and holds the defaults."""

    output: str
    paths: Mapping
    weights: str | None
    weights_dir: str | None
    model: str
    device: str
    bf16: bool
    batch_size: int
    template: str
    score_threshold: float
    detector_weights: str | None
    bg_weights: str | None
    bg_tile: int
    bg_tile_pad: int
    server_name: str
    server_port: int
    share: bool
    auth: str | None
    concurrency: int
    queue_size: int
    max_pixels: int
    max_file_size: str
    frames_per_batch: int
    crf: int
    keep_results: int
    cache_seconds: int
    max_loaded: int

    def __post_init__(self) -> None:
        parse_auth(self.auth)  # a malformed value fails before anything loads
        if self.concurrency < 1:
            raise ValueError(f"concurrency={self.concurrency}: requests run at once, >= 1")
        self._demo: Any = None
        self._env: dict[str, str | None] = {}

    @property
    def url(self) -> str | None:
        """The running server's local URL (None when it is not running)."""
        return None if self._demo is None else self._demo.local_url

    @property
    def temp_dir(self) -> Path:
        """Gradio's upload and cache folder (``GRADIO_TEMP_DIR``) inside ``output``."""
        return Path(self.output).expanduser() / "gradio"

    def start(self) -> str:
        """Load the network and start the server in the background; its local URL."""
        self._env = {k: os.environ.get(k) for k in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")}
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        os.environ["GRADIO_TEMP_DIR"] = str(self.temp_dir)  # read by Gradio per upload
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        try:
            import gradio  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "stage=serve needs Gradio: pip install 'gpen-lightning[serve]' (make install "
                "includes it)"
            ) from err
        from gpen_lightning.serve.app import AppSettings, build_app
        from gpen_lightning.serve.handlers import Workspace
        from gpen_lightning.serve.models import Models

        models = Models(runs_root=self.paths["log_dir"], **options_for(Models, self))
        models.warm_up()  # load once at start: the first request does not wait, errors show now
        results = Path(self.output).expanduser() / "results"
        settings = AppSettings(**options_for(AppSettings, self))
        demo = build_app(models, Workspace(results, keep=self.keep_results), settings)
        demo.queue(default_concurrency_limit=self.concurrency, max_size=self.queue_size)
        demo.launch(
            server_name=self.server_name,
            server_port=self.server_port,
            share=self.share,
            auth=parse_auth(self.auth),
            prevent_thread_lock=True,
            show_error=True,
            quiet=True,
            allowed_paths=[str(results)],
            max_file_size=self.max_file_size,
        )
        self._demo = demo
        print(f"Serving on {demo.local_url}  (outputs in {Path(self.output).expanduser()})")
        return demo.local_url

    def close(self) -> None:
        """Stop the server and remove Gradio's temporary files."""
        if self._demo is not None:
            self._demo.close()
            self._demo = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        for key, value in self._env.items():  # as they were before start()
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env = {}

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        self.start()
        try:
            self._demo.block_thread()
        finally:
            self.close()

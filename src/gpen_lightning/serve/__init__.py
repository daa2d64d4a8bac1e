"""The web app (``stage=serve``): a Gradio page and HTTP API over the restoration pipeline.
``ServeStage`` runs it; ``serve.handlers`` holds its requests as plain functions and
``serve.models`` the shared networks. Gradio is imported only by ``serve.app``."""

from gpen_lightning.serve.stage import ServeStage, parse_auth

__all__ = ["ServeStage", "parse_auth"]

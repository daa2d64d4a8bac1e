"""Importing the package has no side effects; process options apply only when asked for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300
    )


def test_importing_the_package_changes_nothing():
    """The acceptance check of the issue, then every subpackage. Lightning and torchmetrics set
    PYTORCH_NVML_BASED_CUDA_CHECK / TORCHINDUCTOR_CACHE_DIR on import themselves: they are
    imported first, so only changes made by our own modules would show."""
    bare = "import os; e = dict(os.environ); import gpen_lightning; assert dict(os.environ) == e"
    proc = _python(bare)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = (
        "import os, lightning, torchmetrics, kornia, torchvision\n"
        "from PIL import Image; e = dict(os.environ); px = Image.MAX_IMAGE_PIXELS\n"
        "import gpen_lightning.zoo, gpen_lightning.training, gpen_lightning.restore, "
        "gpen_lightning.data, gpen_lightning.evaluate, gpen_lightning.export, gpen_lightning.app\n"
        "assert dict(os.environ) == e, set(os.environ.items()) ^ set(e.items())\n"
        "assert Image.MAX_IMAGE_PIXELS == px"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(("enabled", "value"), [(True, "1"), (False, "0")])
def test_cpu_huge_pages_before_torch(enabled, value):
    code = (
        "import os, sys; from gpen_lightning import use_cpu_huge_pages\n"
        f"assert use_cpu_huge_pages({enabled})\n"
        "print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == value


def test_cpu_huge_pages_after_torch_is_refused_and_leaves_the_environment():
    code = (
        "import os, torch; from gpen_lightning import use_cpu_huge_pages\n"
        "assert not use_cpu_huge_pages(True)\n"
        "assert 'THP_MEM_ALLOC_ENABLE' not in os.environ"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_explicit_environment_value_wins():
    code = (
        "import os; from gpen_lightning import use_cpu_huge_pages\n"
        "use_cpu_huge_pages(True); print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    )
    assert _python(code, THP_MEM_ALLOC_ENABLE="0").stdout.strip() == "0"

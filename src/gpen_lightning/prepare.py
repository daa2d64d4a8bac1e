"""``stage=prepare``: pack a folder of faces into LitData chunks for ``data=streaming``.

Every image under ``input`` is decoded, centre-cropped and resized once to ``size`` (as
``FaceFolder`` does on every read), encoded losslessly as PNG (or as JPEG with ``quality``) and
written by ``litdata.optimize`` in parallel workers into ``output``: LitData's ``index.json`` and
``chunk-*.bin``, plus ``prepare.json`` (the options and counts) and ``skipped.txt`` (the files that
could not be read, with the reason). An existing output is never replaced unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from gpen_lightning.config import options_for
from gpen_lightning.data.folder import IMAGE_EXTENSIONS, read_rgb, sniff, to_square
from gpen_lightning.data.streaming import INFO_FILE, SKIPPED_FILE, import_litdata, is_remote

__all__ = ["PrepareStage", "encode_face", "prepare_faces"]

CHUNK_FILES = ("index.json", INFO_FILE, SKIPPED_FILE)  # besides chunk-*.bin


def encode_face(
    path: str, *, root: str, size: int, quality: int | None, log_dir: str
) -> dict[str, bytes | str] | None:
    """One input file -> ``{"image": PNG/JPEG bytes of the (size, size) face, "name"}``; None
    (and a line in ``log_dir``) when it cannot be decoded. Runs in LitData's worker processes."""
    try:
        img = to_square(read_rgb(path), size)  # (3, size, size) uint8
    except (ValueError, OSError) as err:
        with open(Path(log_dir) / f"skipped-{os.getpid()}.txt", "a") as f:
            f.write(f"{path}\t{err}\n")
        return None
    face = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    buf = io.BytesIO()
    if quality is None:
        face.save(buf, format="PNG")
    else:  # no chroma subsampling: faces keep their colour edges
        face.save(buf, format="JPEG", quality=quality, subsampling=0)
    return {"image": buf.getvalue(), "name": os.path.relpath(path, root)}


def _inputs(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The image files under ``root`` (sorted) and those whose header already says they are not
    images, with the reason."""
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root} (set input=FOLDER of faces)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    reasons = {str(f): sniff(f) if f.is_file() else "not a file" for f in files}
    good = [f for f, why in reasons.items() if why is None]
    bad = [(f, why) for f, why in reasons.items() if why is not None]
    if not good:
        raise FileNotFoundError(
            f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) under {root}"
            + (f" ({len(bad)} unreadable)" if bad else "")
        )
    return good, bad


def _clear(out: Path, *, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``, and then only if it holds nothing but a
    prepared dataset's files (which are removed)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"output {out} is a file; choose a folder")
    present = list(out.iterdir())
    if not present:
        return
    ours = [p for p in present if p.name in CHUNK_FILES or p.name.startswith("chunk-")]
    if not overwrite:
        what = "a prepared dataset" if (out / "index.json").exists() else "files"
        raise FileExistsError(
            f"output {out} already holds {what} ({len(present)} entries); choose another folder "
            "or pass overwrite=true to replace a prepared dataset"
        )
    if len(ours) != len(present):
        others = sorted(p.name for p in present if p not in ours)[:5]
        raise FileExistsError(
            f"overwrite=true only replaces a prepared dataset, but {out} also holds {others}; "
            "choose an empty or new folder"
        )
    for p in ours:
        p.unlink()


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A private scratch folder for LitData's own cache and the workers' skip logs; restores the
    multiprocessing start method that ``litdata.optimize`` sets process-wide."""
    method = multiprocessing.get_start_method(allow_none=True)
    before = os.environ.get("DATA_OPTIMIZER_CACHE_FOLDER")
    with tempfile.TemporaryDirectory(prefix="gpen-prepare-") as tmp:
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(Path(tmp) / "cache")
        try:
            yield tmp
        finally:
            if before is None:
                os.environ.pop("DATA_OPTIMIZER_CACHE_FOLDER", None)
            else:
                os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = before
            multiprocessing.set_start_method(method, force=True)


def prepare_faces(
    *,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    size: int,
    quality: int | None = None,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    overwrite: bool = False,
) -> dict:
    """Pack the faces under ``input`` into ``output`` (see the module); returns the summary
    written to ``output/prepare.json``: size, format, quality, faces, skipped, input."""
    litdata = import_litdata()

    if size < 2:
        raise ValueError(f"size must be at least 2 px, got {size}")
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality is a JPEG quality in [1, 100] (null: lossless PNG): {quality}")
    if is_remote(output):
        raise ValueError(f"prepare writes a local folder (copy it to the object store): {output}")
    root, out = Path(input).expanduser().resolve(), Path(output).expanduser().resolve()
    files, skipped = _inputs(root)
    _clear(out, overwrite=overwrite)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files)))
    fork = "fork" in multiprocessing.get_all_start_methods()
    with _scratch() as tmp:
        fn = partial(encode_face, root=str(root), size=size, quality=quality, log_dir=tmp)
        litdata.optimize(
            fn=fn,
            inputs=files,
            output_dir=str(out),
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            reorder_files=False,
            keep_data_ordered=True,  # the same files give the same order
            start_method="fork" if fork else "spawn",
        )
        for log in sorted(Path(tmp).glob("skipped-*.txt")):
            skipped += [tuple(line.split("\t", 1)) for line in log.read_text().splitlines()]
    return _summarize(out, root, size=size, quality=quality, skipped=sorted(skipped))


def _summarize(
    out: Path, root: Path, *, size: int, quality: int | None, skipped: list[tuple[str, str]]
) -> dict:
    """Write ``prepare.json`` and ``skipped.txt``; the summary."""
    if not (out / "index.json").is_file():
        raise RuntimeError(f"no face under {root} could be decoded ({len(skipped)} skipped)")
    index = json.loads((out / "index.json").read_text())
    faces = sum(int(c["chunk_size"]) for c in index["chunks"])
    info = {
        "size": size,
        "format": "png" if quality is None else "jpeg",
        "quality": quality,
        "faces": faces,
        "skipped": len(skipped),
        "bytes": sum(p.stat().st_size for p in out.glob("chunk-*.bin")),
        "input": str(root),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (out / SKIPPED_FILE).write_text("".join(f"{p}\t{why}\n" for p, why in skipped))
    return info


@dataclass(kw_only=True)
class PrepareStage:
    """``stage=prepare``'s options; ``conf/prepare.yaml`` documents each and holds the defaults."""

    input: str
    output: str
    size: int
    quality: int | None
    workers: int | None
    chunk_bytes: str
    overwrite: bool
    paths: Mapping

    def run(self) -> int:
        """Pack the faces; the exit status (0: faces written; the skipped ones are listed)."""
        info = prepare_faces(**options_for(prepare_faces, self))
        out = Path(self.output).expanduser()
        mb = info["bytes"] / 2**20
        print(
            f"Packed {info['faces']} faces at {info['size']} px ({info['format']}, {mb:.1f} MiB, "
            f"{info['bytes'] / max(info['faces'], 1) / 1024:.1f} KiB per face) into {out}"
        )
        if info["skipped"]:
            print(f"Skipped {info['skipped']} unreadable files: listed in {out / SKIPPED_FILE}")
        print(f"Train on it: python -m gpen_lightning data=streaming data.root={out}")
        return 0

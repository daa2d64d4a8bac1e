"""The docs site: the strict mkdocs build (what `make docs` runs) and the links of the pages.

The build is strict (mkdocs.yml): a broken link, a missing anchor or an API reference that does not
resolve fails it. The other tests are cheap static checks of README.md and docs/*.md that also
hold on GitHub, where the pages are read without the site.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "gpen_lightning"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav) -> list[str]:
    """The .md files named in mkdocs.yml's nav, in order."""
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def built_path(site: Path, page: str) -> Path:
    """Where mkdocs (directory URLs) writes a page: x.md -> x/index.html, index.md -> index.html."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


def prose(text: str) -> str:
    """The Markdown without fenced blocks and code spans (links inside them are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def code(text: str) -> str:
    """Only the code: fenced blocks and code spans."""
    return "\n".join(FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text)))


def anchors(page: Path) -> set[str]:
    """The heading ids of a page as mkdocs' toc extension makes them."""
    headings = re.findall(r"^#{1,6} (.+?)\s*$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in headings}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"strict docs build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_strict_build_writes_every_nav_page(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(config["nav"])
    for name in ("index.md", "training.md", "recipes.md", "restoration.md", "evaluation.md"):
        assert name in pages
    for name in ("export.md", "scaling.md", "performance.md", "troubleshooting.md"):
        assert name in pages
    for page in pages:
        assert built_path(site, page).is_file(), page
    for image in DOCS.glob("*.png"):
        assert (site / image.name).is_file(), image.name


def test_api_reference_covers_every_module(site):
    api = "\n".join(p.read_text() for p in (site / "api").rglob("*.html"))
    assert 'id="gpen_lightning.zoo.gpen.GPEN"' in api
    assert 'id="gpen_lightning.restore.restorer.Restorer"' in api
    assert 'id="gpen_lightning.data.degradation.Degradation"' in api
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):  # __main__ and private modules
            continue
        module = ".".join(parts)
        assert f'id="{module}"' in api, f"{module} is missing from the API reference"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        assert ROOT in dest.parents or dest == ROOT, f"{page.name}: {target} leaves the repository"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"


def test_docs_index_is_the_readme():
    """The site's front page is the README with its links re-rooted at docs/."""
    readme = (ROOT / "README.md").read_text()
    assert (DOCS / "index.md").read_text() == readme.replace("](docs/", "](")
    assert "make test" in readme and "make docs" in readme
    assert len(readme.splitlines()) < 200


def test_pages_name_existing_make_targets_and_config_options():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    conf = ROOT / "conf"
    groups = {p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "stage")}
    pattern = re.compile(rf"(?<![\w.])({'|'.join(sorted(groups))})=([\w|,.-]+)")
    for page in PAGES:
        snippets = code(page.read_text())
        for target in re.findall(r"(?:^|[\s`(])make ([a-z][\w-]*)", snippets, re.MULTILINE):
            assert target in targets, f"{page.name}: `make {target}` is not a Makefile target"
        for group, options in pattern.findall(snippets):
            for option in re.split(r"[|,]", options):
                option = option.rstrip(".")
                if not option:  # a placeholder: `logger=...`
                    continue
                assert (conf / group / f"{option}.yaml").is_file(), f"{page.name}: {group}={option}"

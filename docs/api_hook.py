"""mkdocs hook: expand ``<!-- api: PACKAGE TOKENS -->`` markers of the API pages into mkdocstrings
``:::`` directives, from the modules that exist in ``src/`` at build time.

A module added, renamed or removed then changes the reference by itself, and a page never names
a module that is gone (the strict build would fail on it). Tokens, in order of appearance:
``.`` the package itself (its docstring, not its re-exports, which are documented where they are
defined), ``NAME`` the module ``PACKAGE.NAME`` (skipped when it does not exist), ``*`` every other
module of the package not named on the marker, ``-NAME`` leaves a module out of ``*``. Subpackages
are not modules here: they have markers of their own.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = re.compile(r"^<!-- api: (?P<spec>[^>]*?) -->$", re.MULTILINE)
SRC = Path(__file__).resolve().parents[1] / "src"


def modules(package: str) -> list[str]:
    """The public modules of ``package`` (direct children, not subpackages), sorted."""
    folder = SRC.joinpath(*package.split("."))
    return sorted(
        p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem != "__main__"
    )


def directives(spec: str) -> str:
    package, *tokens = spec.split()
    found = modules(package)
    named = {t.lstrip("-") for t in tokens if t not in (".", "*")}
    blocks = []
    for token in tokens:
        if token == ".":
            blocks.append(f"::: {package}\n    options:\n      members: false")
        elif token == "*":
            blocks += [f"::: {package}.{m}" for m in found if m not in named]
        elif not token.startswith("-") and token in found:
            blocks.append(f"::: {package}.{token}")
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(lambda m: directives(m.group("spec")), markdown)

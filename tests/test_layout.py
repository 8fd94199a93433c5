"""The README's layout map is the tree: every package of avtomatika/ has its
line, and every folder the map names exists (so a new folder, or a renamed
one, cannot leave the map behind)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout_block() -> str:
    """The map's lines for the package: from ``avtomatika/`` to the next
    top-level folder (``tests/`` has indented lines of its own)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1]
    lines = section.split("```", 2)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("avtomatika/"))
    end = next(
        (i for i, line in enumerate(lines[start + 1 :], start + 1) if not line.startswith(" ")),
        len(lines),
    )
    return "\n".join(lines[start:end])


def test_every_package_has_a_line_in_the_readme_layout_map() -> None:
    named = set(re.findall(r"^\s+([a-z_]+(?:/[a-z_]+)*)/\s", _layout_block(), re.MULTILINE))
    packages = {
        str(init.parent.relative_to(ROOT / "avtomatika"))
        for init in (ROOT / "avtomatika").rglob("__init__.py")
        if init.parent != ROOT / "avtomatika"
    }
    # storage/redis/ is described on the storage/ line.
    assert packages - named - {"storage/redis"} == set()
    assert named - packages == set()


def test_every_top_level_module_has_a_line_in_the_readme_layout_map() -> None:
    block = _layout_block()
    modules = {
        path.name
        for path in (ROOT / "avtomatika").glob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    }
    assert {name for name in modules if name not in block} == set()

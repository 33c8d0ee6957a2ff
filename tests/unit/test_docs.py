"""The operator's docs name what the code has: every counter `kumo agent stats` can show is explained in
docs/counters.md, every BPF map and every module of the agent, the edge and health monitoring in
docs/architecture.md. (What they say about each is read by people; that nothing is missing is checked here.)"""

from __future__ import annotations

import re
from pathlib import Path

import kumo
from kumo.datapath.layout import STATS

PACKAGE = Path(kumo.__file__).parent
DOCS = PACKAGE.parent / "docs"


def _sources(pattern: str) -> str:
    return "\n".join(p.read_text() for p in sorted(PACKAGE.rglob(pattern)))


def _documented(doc: str) -> set[str]:
    """What the page names in code spans, and the file names of the paths among them."""
    names = set(re.findall(r"`([^`\s]+)`", (DOCS / doc).read_text()))
    return names | {Path(name).name for name in names}


def test_every_counter_of_the_agent_and_the_datapath_is_explained() -> None:
    named = set(re.findall(r'counters\["([a-z_.]+)"\]', _sources("*.py"))) | set(STATS)
    # counters named from a value: documented by their pattern
    patterns = set(re.findall(r'counters\[f"([a-z_.]+)\{', _sources("*.py")))
    documented = _documented("counters.md")
    assert named - documented == set()
    assert {p for p in patterns if not any(d.startswith(p) for d in documented)} == set()


def test_every_bpf_map_and_every_agent_module_is_in_the_architecture() -> None:
    maps = set(re.findall(r"\}\s*(kumo_\w+)\s+SEC\(\"\.maps\"\)", _sources("*.[ch]")))
    packages = ("agent", "edge", "lb")
    modules = {p.name for package in packages for p in (PACKAGE / package).glob("*.py")} - {"__init__.py"}
    documented = _documented("architecture.md")
    assert maps and maps - documented == set()
    assert modules - documented == set()

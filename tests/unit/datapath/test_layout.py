"""Python and C agree on the datapath's layouts: static assertions generated from the ctypes declarations
are compiled against bpf/lib/kumo.h for the BPF target (a mismatch fails compilation, naming the field)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from kumo.datapath import build, layout


def assertions() -> str:
    lines = ["#include <stddef.h>", '#include "lib/kumo.h"']
    for struct, name in layout.CHECKED:
        for field_name, *_ in struct._fields_:
            offset = getattr(struct, field_name).offset
            lines.append(
                f"_Static_assert(offsetof(struct {name}, {field_name}) == {offset}, "
                f'"{name}.{field_name}: C and layout.py differ");'
            )
        if struct is layout.UpcallHeader:  # the C struct goes on with the packet bytes
            lines.append(f'_Static_assert(offsetof(struct {name}, data) == {ctypes.sizeof(struct)}, "data");')
            lines.append(f'_Static_assert(sizeof(((struct {name} *)0)->data) == {layout.SNAP}, "SNAP");')
        else:
            lines.append(f'_Static_assert(sizeof(struct {name}) == {ctypes.sizeof(struct)}, "{name} size");')
    lines.append(f'_Static_assert(KUMO_MAX_OUT == {layout.MAX_OUT}, "MAX_OUT");')
    lines.append(f'_Static_assert(KUMO_LINK_PORT == {layout.LINK_PORT}u, "LINK_PORT");')
    lines.append(f'_Static_assert(KUMO_MAX_LINKS == {layout.MAX_LINKS}, "MAX_LINKS");')
    lines.append(f'_Static_assert(KUMO_MAX_MASKS == {layout.MAX_MASKS}, "MAX_MASKS");')
    lines.append(f'_Static_assert(KUMO_INJECT_MARK == {layout.INJECT_MARK}u, "INJECT_MARK");')
    lines.append(f'_Static_assert(KUMO_ST_MAX == {len(layout.STATS)}, "STATS");')
    for action in layout.Action:
        lines.append(f'_Static_assert(KUMO_A_{action.name} == {action.value}u, "{action.name}");')
    for name in ("UNTRACKED", "ESTABLISHED", "NEW"):
        lines.append(f'_Static_assert(KUMO_CT_{name} == {getattr(layout, "CT_" + name)}, "{name}");')
    for name in ("MISS", "TTL", "MTU", "INJECT_MISS"):
        lines.append(f'_Static_assert(KUMO_UPCALL_{name} == {getattr(layout, "UPCALL_" + name)}, "{name}");')
    return "\n".join(lines) + "\n"


def test_python_and_c_layouts_agree(tmp_path: Path) -> None:
    clang = shutil.which("clang")
    assert clang, "clang is needed (make setup installs it)"
    source = tmp_path / "layout_check.c"
    source.write_text(assertions())
    done = subprocess.run(
        [clang, "-fsyntax-only", *build.bpf_flags(), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_check_fails_on_a_drifted_layout(tmp_path: Path) -> None:
    source = tmp_path / "drift.c"
    source.write_text(
        assertions().replace(
            "offsetof(struct kumo_flow_key, ip_src) == 20", "offsetof(struct kumo_flow_key, ip_src) == 24"
        )
    )
    done = subprocess.run(
        ["clang", "-fsyntax-only", *build.bpf_flags(), str(source)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "kumo_flow_key.ip_src" in done.stderr


@pytest.mark.parametrize("struct", [s for s, _ in layout.CHECKED])
def test_sizes_are_multiples_of_their_alignment(struct: type[ctypes.Structure]) -> None:
    assert ctypes.sizeof(struct) % ctypes.alignment(struct) == 0


def test_the_upcall_head_struct_reads_what_the_ctypes_layout_declares() -> None:
    head = layout.UpcallHeader(in_port=7, len=1500, cap_len=1400, reason=layout.UPCALL_TTL, queued_ns=2**40 + 5)
    head.key.in_port = 7
    raw = bytes(head)
    assert layout.UPCALL_HEAD.size == layout.UpcallHeader.key.offset
    assert layout.UPCALL_HEAD.unpack_from(raw) == (7, 1500, 1400, layout.UPCALL_TTL, 2**40 + 5)

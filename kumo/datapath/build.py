"""Compiling the BPF C sources (clang -O2 -target bpf) into a cache keyed by the sources' hash, at first
use; `python -m kumo.datapath.build` does it ahead (the Makefile's setup)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kumo.datapath.libbpf import DatapathError

SOURCES = Path(__file__).parent / "bpf"
PROGRAMS = ("port_ingress", "vxlan_ingress")


def cache_dir() -> Path:
    base = os.environ.get("KUMO_BPF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kumo", "bpf"
    )
    return Path(base)


def _digest() -> str:
    h = hashlib.sha256()
    for path in sorted(SOURCES.rglob("*")):
        if path.suffix in (".c", ".h"):
            h.update(path.relative_to(SOURCES).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def bpf_flags() -> list[str]:
    """clang's target and include flags for the BPF sources."""
    flags = ["-target", "bpf", f"-I{SOURCES}"]
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    if multiarch:
        flags.append(f"-I/usr/include/{multiarch}")  # asm/types.h lives under the multiarch directory
    return flags


def object_path(program: str) -> Path:
    """The compiled object of `program` (compiled now if the cache has no object for these sources)."""
    target = cache_dir() / f"{program}-{_digest()}.o"
    if target.exists():
        return target
    clang = shutil.which("clang") or shutil.which("clang-14")
    if clang is None:
        raise DatapathError("clang is not installed: it compiles the BPF datapath (make setup installs it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    cmd = [clang, "-O2", "-g", "-Wall", "-Werror", *bpf_flags(), "-c", str(SOURCES / f"{program}.c"), "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DatapathError(f"compiling {program}.c failed:\n{done.stderr.strip()}")
    tmp.replace(target)  # atomic: concurrent agents never load a half-written object
    return target


def main() -> None:
    for program in PROGRAMS:
        print(object_path(program))


if __name__ == "__main__":
    main()

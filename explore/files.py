"""The files an explorer serves: only those under the folders it was started on.

A file is named in every request by its path relative to one of those roots (`root/rel`, where
`root` is the root's index); `Catalog.resolve` turns that name into a real path and refuses
anything that leaves the root once symlinks and `..` are resolved. Nothing else on the disk
can be read, listed or written through the explorer.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py

from lsm.documents import parse_document
from lsm.society.store import StoreError, check_header

KINDS = ("world", "teacher_trace", "student_rollout")


class NotServed(LookupError):
    """A requested name is not a file the explorer serves (absent, outside its folders, not LSM)."""


@dataclass(frozen=True)
class FileInfo:
    name: str
    """`<root index>/<path relative to that root>`: how requests name the file."""
    kind: str
    """world | teacher_trace | student_rollout."""
    agents: int
    ticks: int
    scenario: str
    """The scenario's name ('' for a world)."""
    teacher: str
    """The teacher backend (`embedded`, `planted`, ...) of a trace; '' otherwise."""
    llm_seed: int | None
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def describe(path: Path, name: str) -> FileInfo | None:
    """A file's catalog entry from its header alone (never its datasets); None if not an LSM file."""

    try:
        with h5py.File(path, "r") as f:
            kind = check_header(f, KINDS)
            if kind != "world" and not bool(f.attrs.get("complete", False)):
                return None  # a run still being written (or killed): not shown until it is complete
            agents = int(f["population"].attrs["n"])
            ticks = int(f.attrs.get("ticks_complete", 0))
            scenario, teacher = "", ""
            if kind != "world":
                sc = parse_document(str(f["scenario"].attrs["yaml"]), f"{path}:scenario", "scenario")
                scenario = str(sc.get("name", "")) if isinstance(sc, dict) else ""
            if kind == "teacher_trace" and "config.teacher" in f.attrs:
                tc = parse_document(str(f.attrs["config.teacher"]), f"{path}:config.teacher", "teacher config")
                teacher = str(tc.get("backend", "")) if isinstance(tc, dict) else ""
            seeds = json.loads(f.attrs.get("seeds", "{}"))
    except (OSError, KeyError, StoreError, ValueError):
        return None
    llm = seeds.get("llm")
    return FileInfo(name, kind, agents, ticks, scenario, teacher, int(llm) if llm is not None else None, path.stat().st_size)


class Catalog:
    """The LSM files under a set of roots (folders, or single files whose folder becomes the root)."""

    def __init__(self, paths: list[str | Path]):
        roots: list[Path] = []
        self.only: dict[int, set[str]] = {}
        """Roots given as single files: only those files are served from that folder."""
        for p in paths:
            p = Path(p).expanduser().resolve()
            if not p.exists():
                raise FileNotFoundError(f"{p}: no such file or folder to explore")
            root = p if p.is_dir() else p.parent
            if root not in roots:
                roots.append(root)
            k = roots.index(root)
            if p.is_file():
                self.only.setdefault(k, set()).add(p.name)
            elif k in self.only:
                del self.only[k]  # the whole folder was also given
        self.roots = roots

    def resolve(self, name: str) -> Path:
        """The real path of a served file name, or `NotServed`."""
        root_s, _, rel = str(name).partition("/")
        if not root_s.isdigit() or int(root_s) >= len(self.roots) or not rel:
            raise NotServed(f"{name!r} is not a served file (names look like '0/rollout.h5'; see /api/files)")
        root = self.roots[int(root_s)]
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or path == root:
            raise NotServed(f"{name!r} is outside the folders this explorer serves")
        k = int(root_s)
        if k in self.only and str(path.relative_to(root)) not in self.only[k]:
            raise NotServed(f"{name!r} is not one of the files this explorer was started on")
        if not path.is_file():
            raise NotServed(f"{name!r}: no such file")
        return path

    def name_of(self, path: Path) -> str:
        """The request name of a real path under a root (the first root holding it)."""
        path = path.resolve()
        for k, root in enumerate(self.roots):
            if path.is_relative_to(root):
                return f"{k}/{path.relative_to(root)}"
        raise NotServed(f"{path} is outside the folders this explorer serves")

    def files(self) -> list[FileInfo]:
        """Every complete LSM file under the roots, sorted by name (hidden folders and caches skipped)."""
        out = []
        for k, root in enumerate(self.roots):
            candidates = [root / n for n in sorted(self.only[k])] if k in self.only else sorted(root.rglob("*.h5"))
            for path in candidates:
                rel = path.relative_to(root)
                if any(part.startswith(".") or part.endswith(".journal") for part in rel.parts):
                    continue
                if not path.resolve().is_relative_to(root):
                    continue  # a link leading out of the folder: never served
                info = describe(path, f"{k}/{rel}")
                if info is not None:
                    out.append(info)
        return out

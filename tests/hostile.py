"""Hostile but plausible input files, shared by the tests and by the before/after measurement.

`hostile_files(folder, family)` writes one file per class of hostile input for a config family
(`scenarios`, `population`, `graph`, `teacher`) built from the shipped config, and returns
{class name: path}. Every one of them must be refused by the loader with a `ConfigError`.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from lsm.config import shipped

SHIPPED = {"scenarios": "vaccine_campaign.yaml", "population": "generic.yaml", "graph": "default.yaml",
           "teacher": "debug.yaml"}
BAD_NAME = "vax\x00\u202etxt.\x1b[31mred"


def base(family: str) -> dict:
    return yaml.safe_load(shipped(family, SHIPPED[family]).read_text())


def _dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def syntax_cases(folder: Path) -> dict[str, bytes | str | None]:
    """Classes that break any YAML family: content to write (None: make a directory instead)."""
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        laughs.append(f"{cur}: &{cur} [{', '.join('*' + prev for _ in range(9))}]")
    return {
        "billion_laughs": "\n".join(laughs) + "\n",
        "recursive_alias": "name: &n [*n]\n",
        "nested_5000_brackets": "name: " + "[" * 5000 + "]" * 5000 + "\n",
        "nested_5000_mappings": "name: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "binary": bytes(range(256)) * 64,
        "non_utf8_latin1": "name: caf\xe9\n".encode("latin-1"),
        "oversized_20MB": "# " + "x" * (20 << 20) + "\n",
        "python_object_tag": "name: !!python/object/apply:os.system ['echo pwned']\n",
        "empty": "",
        "top_level_list": "- 1\n- 2\n",
        "directory": None,
    }


def semantic_cases(family: str) -> dict[str, str]:
    """Classes that are valid YAML but out of the schema's bounds, for one family."""
    d = base(family)
    out: dict[str, dict] = {}
    if family == "scenarios":
        out["ticks_1e11"] = {**d, "ticks": 100_000_000_000}
        out["event_text_200KB"] = {**d, "events": [{**d["events"][0], "text": "vaccines " * 25_000}]}
        out["name_nul_rlo_ansi"] = {**d, "name": BAD_NAME}
        out["valence_nan"] = {**d, "events": [{**d["events"][0], "valence": float("nan")}]}
        out["credibility_inf"] = {**d, "events": [{**d["events"][0], "credibility": float("inf")}]}
        out["events_5000"] = {**d, "events": [{**d["events"][0], "tick": 0}] * 5000}
        out["options_1000"] = {**d, "actions": {"type": "categorical", "options": [{"name": f"o{i}"} for i in range(1000)]}}
    elif family == "population":
        out["name_nul_rlo_ansi"] = {**d, "name": BAD_NAME}
        attrs = dict(d["attributes"])
        first = next(iter(attrs))
        out["categories_5000"] = {**d, "attributes": {**attrs, first: {"type": "categorical",
                                                                        "categories": {f"c{i}": 1 for i in range(5000)}}}}
        out["attribute_ansi_name"] = {**d, "attributes": {**attrs, "\x1b[2Jwipe": attrs[first]}}
        out["rho_nan"] = {**d, "correlations": [{"between": list(attrs)[:2], "rho": float("nan")}]}
    elif family == "graph":
        out["mean_degree_1e12"] = {**d, "friend": {**d["friend"], "mean_degree": 1e12}}
        out["name_nul_rlo_ansi"] = {**d, "name": BAD_NAME}
        out["weight_inf"] = {**d, "friend": {**d["friend"], "weight": float("inf")}}
    elif family == "teacher":
        out["max_tokens_1e9"] = {**d, "max_tokens": 10**9}
        out["temperature_nan"] = {**d, "temperature": float("nan")}
        out["neighbors_1e6"] = {**d, "neighbors": 10**6}
    return {k: _dump(v) for k, v in out.items()}


def hostile_files(folder: str | Path, family: str) -> dict[str, Path]:
    folder = Path(folder) / family
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    cases: dict = {**syntax_cases(folder), **semantic_cases(family)}
    for name, content in cases.items():
        p = folder / f"{name}.yaml"
        if content is None:
            p.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        out[name] = p
    out["missing"] = folder / "does_not_exist.yaml"
    return out




def command(family: str, path: Path, tmp: Path, world: str) -> list[str]:
    """The `lsm` arguments a user would hand this file to."""
    if family == "scenarios":
        return ["scenario", str(path)]
    if family == "population":
        return ["world", "--population", str(path), "--agents", "50", "--out", str(tmp / "w.h5")]
    if family == "graph":
        return ["world", "--graph", str(path), "--agents", "50", "--out", str(tmp / "w.h5")]
    return ["gen", "--world", world, "--scenario", "guessing_game", "--teacher", str(path), "--out", str(tmp / "t.h5")]


def classify(rc: int | None, stderr: str) -> str:
    if rc is None:
        return "hang (killed after the timeout)"
    if "Traceback" in stderr or "MemoryError" in stderr:
        return "traceback"
    if rc == 2:
        return "refused cleanly"
    if rc == 0:
        return "accepted"
    return f"exit {rc}"


def measure(folder: Path, python: str, world: str, timeout_s: float = 30.0, mem_gb: float = 4.0) -> list[tuple[str, str, str, str]]:
    """Run every hostile file through the CLI (`python -m lsm.cli ...`) under a time and memory
    limit; (family, class, outcome, first line of stderr) per file."""
    import resource
    import subprocess

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (int(mem_gb * 2**30), int(mem_gb * 2**30)))

    rows = []
    for fam in SHIPPED:
        for name, p in hostile_files(folder, fam).items():
            tmp = folder / "out" / fam / name
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                r = subprocess.run([python, "-m", "lsm.cli", *command(fam, p, tmp, world)], capture_output=True,
                                   text=True, timeout=timeout_s, preexec_fn=limit, errors="replace")
                rc, err = r.returncode, r.stderr
            except subprocess.TimeoutExpired:
                rc, err = None, ""
            last = [ln for ln in err.strip().splitlines() if ln.strip()]
            rows.append((fam, name, classify(rc, err), (last[-1] if last else "")[:160]))
            print(*rows[-1], sep=" | ", flush=True)
    return rows


if __name__ == "__main__":  # python tests/hostile.py FOLDER WORLD.h5 [PYTHON]: the before/after table
    import sys

    measure(Path(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 else sys.executable, sys.argv[2])

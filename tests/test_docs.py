"""The documentation stands alone and its references hold.

- every relative link in README.md and docs/*.md resolves to a file of the repository, and every
  `#anchor` names a heading of the target (GitHub's slug rules);
- every `§N`, in the documents and in the code and configs (.py, .yaml/.yml, .toml, .sh,
  Makefile, .ipynb), is a numbered section `## N. Title` of docs/design.md; in code and configs
  it is written `docs/design.md §N`;
- every `docs/NAME.md#anchor` named in code and configs resolves;
- nothing cites a file outside the repository or a tracker's issue number.

The helpers work on text, so the last tests feed them broken samples to show they fail. This
file itself is left out of the scans: it spells the forbidden patterns.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = "docs/design.md"

SKIP_DIRS = {".venv", ".git", "out", "runs", "__pycache__", ".mypy_cache", ".pytest_cache", "node_modules"}
CODE_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".sh", ".ipynb"}
CODE_NAMES = {"Makefile"}
SELF = Path(__file__).resolve()

FORBIDDEN = [
    (re.compile(r"DESIGN\s*§"), "cites the old design document (write docs/design.md §N)"),
    (re.compile(r"DESIGN\.md"), "cites DESIGN.md (the design is docs/design.md)"),
    (re.compile(r"FINDINGS"), "cites FINDINGS (measured results are in docs/results.md)"),
    (re.compile(r"\.\./shared"), "cites a path outside the repository"),
    (re.compile(r"\bissues?\s*#?\s*\d+", re.I), "cites an issue number"),
    (re.compile(r"\bissue['’]s\b", re.I), "refers to an issue ('the issue's ...')"),
]
SECTION = re.compile(r"§\s*(\d+)")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_DOC_REF = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")


# --------------------------------------------------------------------------- files


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def code_files(root: Path = ROOT) -> list[Path]:
    out = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.endswith((".egg-info", ".journal")))
        for n in sorted(names):
            p = Path(d) / n
            if (p.suffix in CODE_SUFFIXES or n in CODE_NAMES) and p.resolve() != SELF:
                out.append(p)
    return out


def texts(path: Path, root: Path = ROOT) -> list[tuple[str, str]]:
    """(label, text) pieces of a file: the file itself, or a notebook's cells one by one."""
    rel = path.relative_to(root).as_posix()
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return [(f"{rel}[cell {i}]", "".join(c.get("source", [])) if isinstance(c.get("source"), list)
                 else str(c.get("source", ""))) for i, c in enumerate(nb.get("cells", []))]
    return [(rel, path.read_text(encoding="utf-8", errors="replace"))]


# --------------------------------------------------------------------------- markdown


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, links and backticks dropped, everything but
    letters, digits, `-`, `_` and spaces removed, spaces turned into `-`."""
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    h = h.replace("`", "")
    return "".join(ch for ch in h if ch in "-_ " or unicodedata.category(ch)[0] in "LN").replace(" ", "-")


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fence = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if not fence:
            yield i, line


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    res = set()
    for _, line in prose_lines(text):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(2))
            n = seen.get(s, 0)
            res.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return res


def design_sections(text: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", text, re.M)}


def link_problems(label: str, text: str, base: Path, root: Path) -> list[str]:
    """Relative links of one markdown text (its folder `base`) that do not resolve in `root`."""
    bad = []
    cache: dict[Path, set[str]] = {}
    for i, line in prose_lines(text):
        line = re.sub(r"`[^`]*`", "``", line)  # inline code is not a link
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # external: https:, mailto:
            path, _, anchor = target.partition("#")
            tp = (base / path).resolve() if path else None
            where = f"{label}:{i}: ({target})"
            if tp is not None:
                if not tp.is_relative_to(root.resolve()):
                    bad.append(f"{where} points outside the repository")
                    continue
                if not tp.exists():
                    bad.append(f"{where} no such file")
                    continue
            if anchor:
                if tp is not None and tp.suffix != ".md":
                    bad.append(f"{where} an anchor into a file that is not markdown")
                    continue
                if tp not in cache:
                    cache[tp] = anchors(tp.read_text(encoding="utf-8") if tp is not None else text)
                if anchor not in cache[tp]:
                    bad.append(f"{where} no heading with the anchor #{anchor}")
                    continue
            # a link written "§N" must land on section N of the design
            sec = re.search(r"§\s*(\d+)\s*$", line[:m.start()].rsplit("[", 1)[-1])
            num = re.match(r"(\d+)-", anchor)
            if sec and num and sec.group(1) != num.group(1):
                bad.append(f"{where} says §{sec.group(1)} but links section {num.group(1)}")
    return bad


# --------------------------------------------------------------------------- any text


def section_problems(label: str, text: str, sections: set[int], code: bool) -> list[str]:
    """`§N` that is not a section of docs/design.md; in code, `§N` without `docs/design.md` on its line."""
    bad = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in SECTION.finditer(line):
            n = int(m.group(1))
            if n not in sections:
                bad.append(f"{label}:{i}: §{n} is not a section of {DESIGN} (it has {sorted(sections)})")
            elif code and "docs/design.md" not in line[:m.start()]:
                bad.append(f"{label}:{i}: §{n} without 'docs/design.md' before it on the line")
    return bad


def forbidden_problems(label: str, text: str) -> list[str]:
    bad = []
    for i, line in enumerate(text.splitlines(), 1):
        for pat, why in FORBIDDEN:
            for m in pat.finditer(line):
                bad.append(f"{label}:{i}: {why}: {m.group(0)!r}")
    return bad


def code_doc_ref_problems(label: str, text: str, root: Path) -> list[str]:
    """`docs/NAME.md#anchor` named in code and configs: the file exists and has the heading."""
    bad = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in CODE_DOC_REF.finditer(line):
            p = root / "docs" / m.group(1)
            if not p.exists():
                bad.append(f"{label}:{i}: docs/{m.group(1)} does not exist")
            elif m.group(2) and m.group(2) not in anchors(p.read_text(encoding="utf-8")):
                bad.append(f"{label}:{i}: docs/{m.group(1)} has no heading with the anchor #{m.group(2)}")
    return bad


def report(bad: list[str], what: str) -> str:
    return f"{len(bad)} {what}:\n  " + "\n  ".join(bad)


# --------------------------------------------------------------------------- the repository


def _sections() -> set[int]:
    secs = design_sections((ROOT / DESIGN).read_text(encoding="utf-8"))
    assert secs == set(range(1, max(secs) + 1)), f"{DESIGN}: sections not numbered 1..N: {sorted(secs)}"
    return secs


def test_doc_links_and_anchors_resolve():
    bad = []
    for f in doc_files():
        bad += link_problems(f.relative_to(ROOT).as_posix(), f.read_text(encoding="utf-8"), f.parent, ROOT)
    assert not bad, report(bad, "broken links in README.md and docs/")


def test_section_references_resolve_in_design():
    secs = _sections()
    bad = []
    for f in doc_files():
        bad += section_problems(f.relative_to(ROOT).as_posix(), f.read_text(encoding="utf-8"), secs, code=False)
    for f in code_files():
        for label, text in texts(f):
            bad += section_problems(label, text, secs, code=True)
    assert not bad, report(bad, f"§ references that do not resolve in {DESIGN}")


def test_code_references_to_docs_resolve():
    bad = []
    for f in code_files():
        for label, text in texts(f):
            bad += code_doc_ref_problems(label, text, ROOT)
    assert not bad, report(bad, "references to docs/ in code and configs that do not resolve")


def test_nothing_cites_outside_the_repository_or_an_issue():
    bad = []
    for f in [*doc_files(), *code_files()]:
        for label, text in texts(f):
            bad += forbidden_problems(label, text)
    assert not bad, report(bad, "references to files outside the repository or to issues")


# --------------------------------------------------------------------------- the checks can fail


def test_the_checks_catch_broken_samples(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# D\n\n## 1. One\n\n## 2. Two `x`\n\n### Sub part\n")
    readme = ("see [ok](docs/design.md#2-two-x) and [ok](docs/design.md#sub-part), [§1](docs/design.md#1-one)\n"
              "[gone](docs/missing.md) [anchor](docs/design.md#3-three) [out](../elsewhere.md)\n"
              "[§2](docs/design.md#1-one) [web](https://example.org) `[code](nowhere.md)`\n"
              "```\n[fenced](nowhere.md)\n```\n")
    bad = link_problems("README.md", readme, tmp_path, tmp_path)
    assert len(bad) == 4, bad
    assert any("README.md:2:" in b and "no such file" in b for b in bad)
    assert any("#3-three" in b and "no heading" in b for b in bad)
    assert any("outside the repository" in b for b in bad)
    assert any("says §2 but links section 1" in b for b in bad)

    secs = design_sections((tmp_path / "docs" / "design.md").read_text())
    assert secs == {1, 2}
    assert section_problems("x.md", "§1 and §2", secs, code=False) == []
    assert section_problems("x.py", "# see docs/design.md §2", secs, code=True) == []
    bad = section_problems("x.py", "ok\n# see docs/design.md §9\n# see §1", secs, code=True)
    assert bad == ["x.py:2: §9 is not a section of docs/design.md (it has [1, 2])",
                   "x.py:3: §1 without 'docs/design.md' before it on the line"], bad

    old_design, old_findings = "DESIGN" + " §4", "FIND" + "INGS"
    sample = (f"ok: docs/design.md §4\n(see {old_design})\n{old_findings}: a result\n"
              "../" + "shared/x\nfixed in issue" + " 14\nthe issue" + "'s closing note\nflagged issues, GroundingIssue\n")
    bad = forbidden_problems("y.py", sample)
    assert [b.split(":")[1] for b in bad] == ["2", "3", "4", "5", "6"], bad

    (tmp_path / "docs" / "results.md").write_text("# R\n\n## Teacher speed\n")
    bad = code_doc_ref_problems("z.yaml", "# docs/results.md#teacher-speed\n# docs/results.md#nope\n# docs/gone.md",
                                tmp_path)
    assert [b.split(":")[1] for b in bad] == ["2", "3"], bad

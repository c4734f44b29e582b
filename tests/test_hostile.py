"""Hostile input files through the real command line: every one is refused with one
printable paragraph naming the file, exit status 2, no traceback — none hangs or is accepted.

The same files (tests/hostile.py) also run outside pytest (docs/limits.md#how-it-is-tested):
`python tests/hostile.py FOLDER WORLD.h5` runs each in its own process under a time and memory limit.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lsm.cli import main
from lsm.documents import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES, parse_document
from lsm.config import ConfigError, shipped
from tests.hostile import SHIPPED, command, hostile_files


@pytest.mark.parametrize("family", list(SHIPPED))
def test_every_hostile_file_is_refused_in_one_paragraph(family, tmp_path, world_file, capsys):
    for name, path in hostile_files(tmp_path, family).items():
        rc = main(command(family, path, tmp_path, str(world_file)))
        err = capsys.readouterr().err
        assert rc == 2, f"{family}/{name}: exit {rc}, stderr {err[:300]!r}"
        assert "Traceback" not in err, f"{family}/{name}: {err}"
        assert err.startswith("error: ") and err.count("\n") == 1, f"{family}/{name}: not one paragraph: {err[:400]!r}"
        assert str(path) in err, f"{family}/{name}: the message does not name the file: {err[:300]}"
        assert err[:-1].isprintable(), f"{family}/{name}: a control character reached the terminal: {err[:300]!r}"
        assert len(err) < 4000, f"{family}/{name}: a {len(err)}-character message"


def _nested(value, depth: int):
    """`value` inside `depth` one-element lists: what `[` * depth + value + `]` * depth parses to."""
    for _ in range(depth):
        value = [value]
    return value


def test_the_loader_bounds_each_at_its_documented_constant():
    at_depth = "x: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1)
    assert parse_document(at_depth) == {"x": _nested(1, MAX_DEPTH - 1)}
    with pytest.raises(ConfigError, match=f"nested at most {MAX_DEPTH} deep"):
        parse_document("x: " + "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH)
    # `a: &r [99 values]` and `b: [*r x m]` expand to 104 + 100 m values: m = 1,998 is the most allowed
    row = "[" + ", ".join(["1"] * 99) + "]"
    m = (MAX_NODES - 104) // 100
    assert len(parse_document(f"a: &r {row}\nb: [{', '.join(['*r'] * m)}]\n")["b"]) == m
    with pytest.raises(ConfigError, match="after expanding aliases"):
        parse_document(f"a: &r {row}\nb: [{', '.join(['*r'] * (m + 1))}]\n")
    with pytest.raises(ConfigError, match="repeated"):
        parse_document("a: 1\nb: 2\na: 3\n")
    with pytest.raises(ConfigError, match=f"at most {MAX_DOCUMENT_BYTES:,} bytes"):
        parse_document("# " + "x" * MAX_DOCUMENT_BYTES)


def test_a_name_that_would_rewrite_the_terminal_is_escaped_in_the_message(tmp_path, capsys):
    p = tmp_path / "sc.yaml"
    p.write_text(shipped("scenarios", "guessing_game.yaml").read_text()
                 .replace("name: guessing_game", 'name: "\\e[2J\\u202Eevil"'))
    assert main(["scenario", str(p)]) == 2
    err = capsys.readouterr().err
    assert "'\\x1b[2J\\u202eevil'" in err and "\x1b" not in err and "\u202e" not in err


@pytest.mark.parametrize("spec, message", [
    ("events.0.credibility=0:1:1000000000", "a count of 1 to 101 values"),
    ("events.0.credibility=" + ",".join(["0.5"] * 102), "at most 101 values"),
    ("events.0.credibility=nan,0.5", "nan is not a finite number"),
    ("events.0.credibility=0:inf:3", "is not a finite number"),
])
def test_a_sweep_specification_is_bounded(spec, message):
    from lsm.infer.counterfactual import SweepAxis

    with pytest.raises(ValueError, match=message):
        SweepAxis.parse(spec)
    assert len(SweepAxis.parse("events.0.credibility=0:1:101").values) == 101


def test_training_presets_go_through_the_same_loader(tmp_path, capsys):
    from tests.hostile import syntax_cases

    for name, content in syntax_cases(tmp_path).items():
        p = tmp_path / f"{name}.yaml"
        if content is None:
            p.mkdir()
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        if name in ("empty", "top_level_list"):
            continue  # valid YAML that LightningCLI itself refuses (its own usage message, exit 2)
        rc = main(["train", "fit", "--config", str(p)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and str(p) in err, f"{name}: exit {rc}: {err[:300]}"


def _with_bytes_after(family: str, tail: bytes, folder) -> tuple[Path, int]:
    """The shipped config of `family` with a comment `# café: ` and then `tail` appended: (path,
    byte offset of `tail`). The é and any non-ASCII text of the file make the byte offset differ
    from the character offset, so a message counting characters would be caught."""
    head = shipped(family, SHIPPED[family]).read_bytes() + "\n# café: ".encode()
    path = folder / f"{family}.yaml"
    path.write_bytes(head + tail + b"\n")
    return path, len(head)


@pytest.mark.parametrize("family", ["scenarios", "population", "graph"])
@pytest.mark.parametrize("tail, problem", [
    (b"\xff", r"""the document = "byte b'\\xff' at offset {}": expected UTF-8 text."""),  # never valid in UTF-8
    (b"\xe2\x82x", r"""the document = "byte b'\\xe2' at offset {}": expected UTF-8 text."""),  # 3-byte sequence cut at 2
    (b"ok\x00", "the document = 'a NUL byte at offset {}': expected a UTF-8 text file"),  # the NUL, 2 bytes in
])
def test_an_encoding_refusal_names_the_byte_offset(family, tail, problem, tmp_path, capsys):
    """docs/limits.md: a NUL byte or invalid UTF-8 is refused with its offset: the offset printed
    is the byte's own, counted in bytes from the start of the file, through the real command."""
    path, at = _with_bytes_after(family, tail, tmp_path)
    at += tail.index(0) if 0 in tail else 0
    assert main(command(family, path, tmp_path, "unused.h5")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and err.count("\n") == 1, err
    assert problem.format(at) in err, err

"""`lsm explore` end to end in a real browser (Debian's headless Chromium driven by Playwright)
on the demo's artefacts: every view renders (non-blank canvases, the expected legends), a
click on a node opens its agent, an interview comes back with its four checks, a what-if and a
sweep run and draw their charts. Screenshots go to $LSM_SCREENSHOTS (docs/explorer.md's come from
`make screenshots`: this test on `make demo`'s out/demo), else to the test's temporary folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lsm.cli import main
from tests.conftest import DEMO_ARGS

pytest.importorskip("playwright", reason="the browser tests need playwright (pip install -e '.[test]')")
from lsm.explore.browser import browser, chromium_path, node_position, painted_fraction, served  # noqa: E402

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="no chromium here: `make test` installs Debian's chromium")


@pytest.fixture(scope="module")
def demo(demo_dir):
    """The demo's folder: what test_demo left there, or computed now (the demo resumes); with
    $LSM_EXPLORE_DEMO, that finished demo instead (`make screenshots` passes out/demo)."""
    if os.environ.get("LSM_EXPLORE_DEMO"):
        return Path(os.environ["LSM_EXPLORE_DEMO"])
    assert main(["demo", "--out", str(demo_dir), *DEMO_ARGS]) == 0
    return demo_dir


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("LSM_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _painted(page, selector: str, at_least: float = 0.02) -> float:
    frac = painted_fraction(page.locator(selector).screenshot())
    assert frac >= at_least, f"{selector} looks blank ({frac:.3%} of its pixels differ from the background)"
    return frac


def _settled(page, button: str, timeout_ms: int = 300_000) -> None:
    """Wait until a clicked button is enabled again: its job ended, with a result or an error."""
    page.wait_for_function(f"!document.querySelector('{button}').disabled", timeout=timeout_ms)


def test_every_view_in_a_browser(demo, tmp_path):
    from lsm.explore.app import ExploreConfig, create_app

    shots = _shots(tmp_path)
    app = create_app(ExploreConfig([str(demo)], teacher="demo"))
    errors: list[str] = []
    with served(app) as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # Overview of the rollout, compared with the teacher it was validated against
        page.goto(f"{url}/?file=0/teacher_llm_seed0.h5&compare=0/rollout.h5")
        page.wait_for_function("window.lsm.compare && document.querySelector('#cmp-diff canvas')", timeout=120_000)
        for sel in ("#ov-shares", "#ov-by", "#ov-channels", "#ov-spread", "#cmp-diff"):
            _painted(page, sel)
        legend = page.locator("#ov-shares").inner_text()
        for action in ("vaccinate", "wait", "refuse"):
            assert action in legend
        assert page.locator("#ov-events tr").count() >= 2  # header + at least one event
        validate = json.loads((demo / "validate.json").read_text())
        cells = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
                 for r in page.locator("#cmp-metrics tr").all()[1:]}
        assert cells["decision_jsd_mean"] == f"{validate['decision_jsd_mean']['student']:.4f}"  # lsm validate's figure
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # Society: the graph of the rollout; a click on a node opens that agent
        page.select_option("#file-b", "")
        page.select_option("#file-a", "0/rollout.h5")
        page.wait_for_function("window.lsm.loaded === '0/rollout.h5'")
        page.click("#tabs button[data-tab=society]")
        page.wait_for_function("window.lsm.sigma && window.lsm.graph && window.lsm.graph.file === '0/rollout.h5'", timeout=120_000)
        page.wait_for_timeout(500)
        _painted(page, "#soc-graph", 0.005)
        assert "household" in page.locator("#soc-legend").inner_text()
        page.fill("#soc-tick", "1")
        page.dispatch_event("#soc-tick", "input")
        page.screenshot(path=str(shots / "society.png"))
        node = 2
        agent_id = page.evaluate(f"window.lsm.graph.nodes[{node}].id")
        name = page.evaluate(f"window.lsm.graph.nodes[{node}].name")
        page.mouse.click(*node_position(page, node))
        page.wait_for_function(f"window.lsm.agent && window.lsm.agent.agent === {agent_id}", timeout=60_000)
        assert name in page.locator("#ag-name").inner_text()

        # Agent panel: record, attention, an interview
        page.wait_for_function("document.querySelector('#ag-attention table')", timeout=120_000)
        _painted(page, "#ag-channels")
        assert page.locator("#ag-ticks tr").count() == 1 + page.evaluate("window.lsm.overview.ticks")  # header + a row per tick
        page.fill("#ag-question", "Why did you decide as you did in the last tick?")
        page.click("#ag-ask")
        _settled(page, "#ag-ask")
        checks = page.locator("#ag-narration .check")
        assert checks.count() == 4, page.locator("#ag-narration").inner_text()
        assert [checks.nth(k).get_attribute("data-check") for k in range(4)] == ["grounded", "relevant", "attributed", "complete"]
        assert page.locator("#ag-narration .check.verdict-ok").count() == 4  # the answer shown passes (the LLM's, or the facts)
        assert page.locator("#ag-narration .fallback").count() == page.locator("#ag-narration details").count()
        assert page.locator("#ag-narration .answer").inner_text().strip()
        page.screenshot(path=str(shots / "agent.png"), full_page=True)

        # What-if: the first event's credibility lowered, then a sweep of it
        page.click("#tabs button[data-tab=whatif]")
        page.wait_for_selector("#wi-events input[data-field=credibility]")
        page.fill("#wi-events input[data-event='0'][data-field=credibility]", "0.05")
        page.click("#wi-run")
        _settled(page, "#wi-run")
        assert page.locator("#wi-result:not([hidden]) #wi-diff canvas").count(), page.locator("#wi-msg").inner_text()
        _painted(page, "#wi-diff")
        assert "whatif/" in page.locator("#wi-file").inner_text()
        page.fill("#sw-values", "0:1:3")
        page.click("#sw-run")
        _settled(page, "#sw-run")
        assert page.locator("#sw-figure:not([hidden]) #sw-chart canvas").count(), page.locator("#sw-msg").inner_text()
        _painted(page, "#sw-chart")
        page.screenshot(path=str(shots / "whatif.png"), full_page=True)
    assert not [e for e in errors if "favicon" not in e], errors
    assert list((demo / "whatif").glob("rollout__e0-credibility-0.05.h5"))

"""The explorer's speed in a real browser: time to first paint of each rollout's Overview (cold:
aggregates computed; warm: from the cache beside the file), the Society graph, and a what-if
round trip (click to difference chart).

    python -m lsm.explore.measure --rollouts r1e4.h5,r1e5.h5 --whatif r1e4.h5 [--ckpt DIR]

Each rollout's caches (`*.explore.json`) are removed first, so "cold" is a first visit. Prints
a Markdown table and the command that produced it.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from lsm.explore.app import ExploreConfig, create_app
from lsm.explore.browser import browser, served


def measure(rollouts: list[Path], whatif: Path | None, ckpt: str | None, nodes: int = 2000) -> list[dict]:

    roots = sorted({str(p.resolve().parent) for p in rollouts + ([whatif] if whatif else [])})
    app = create_app(ExploreConfig(roots, ckpt=ckpt))
    catalog = app.state.catalog
    rows = []
    with served(app) as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        for path in rollouts:
            for cache in path.parent.glob(path.name + ".*.explore.json"):
                cache.unlink()
            name = catalog.name_of(path)
            row: dict = {"file": path.name}
            for visit in ("cold", "warm"):
                t0 = time.perf_counter()
                page.goto(f"{url}/?file={name}")
                page.wait_for_function(f"window.lsm.loaded === {name!r} && document.querySelector('#ov-spread canvas')",
                                       timeout=600_000)
                row[f"overview_{visit}_s"] = time.perf_counter() - t0
            row["agents"] = page.evaluate("window.lsm.overview.agents")
            t0 = time.perf_counter()
            page.click("#tabs button[data-tab=society]")
            if nodes != 2000:
                page.select_option("#soc-nodes", str(nodes))
            page.wait_for_function(f"window.lsm.sigma && window.lsm.graph && window.lsm.graph.file === {name!r} "
                                   f"&& window.lsm.graph.nodesAsked === '{nodes}'", timeout=600_000)
            row["society_s"] = time.perf_counter() - t0
            rows.append(row)
        if whatif is not None:
            name = catalog.name_of(whatif)
            page.goto(f"{url}/?file={name}&tab=whatif")
            page.wait_for_selector("#wi-events input[data-field=credibility]", timeout=600_000)
            for stale in (whatif.parent / "whatif").glob(f"{whatif.stem}__e0-credibility-0.05*"):
                stale.unlink()
            page.fill("#wi-events input[data-event='0'][data-field=credibility]", "0.05")
            t0 = time.perf_counter()
            page.click("#wi-run")
            page.wait_for_function("!document.querySelector('#wi-run').disabled", timeout=600_000)
            took = time.perf_counter() - t0
            if not page.locator("#wi-result:not([hidden])").count():
                raise RuntimeError("the what-if failed: " + page.locator("#wi-msg").inner_text())
            rows.append({"file": whatif.name, "agents": page.evaluate("window.lsm.base.agents"), "whatif_s": took})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", required=True, help="comma-separated rollout files")
    ap.add_argument("--whatif", help="a rollout to time a what-if on (event 0's credibility set to 0.05)")
    ap.add_argument("--ckpt", help="the checkpoint (default: the one each rollout records)")
    ap.add_argument("--nodes", type=int, default=2000)
    a = ap.parse_args(argv)
    rows = measure([Path(p) for p in a.rollouts.split(",")], Path(a.whatif) if a.whatif else None, a.ckpt, a.nodes)
    print("| file | agents | overview, first visit (s) | overview, cached (s) | society graph (s) | what-if round trip (s) |")
    print("|---|---|---|---|---|---|")
    f = lambda r, k: f"{r[k]:.2f}" if k in r else "–"  # noqa: E731
    for r in rows:
        print(f"| {r['file']} | {r['agents']:,} | {f(r, 'overview_cold_s')} | {f(r, 'overview_warm_s')} | {f(r, 'society_s')} | {f(r, 'whatif_s')} |")
    print(f"\n`python -m lsm.explore.measure {shlex.join(sys.argv[1:] if argv is None else argv)}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A served explorer and a headless Chromium driving it: shared by the browser tests and
`python -m lsm.explore.measure`.

Chromium is Debian's `chromium` package (Playwright's own browser download cannot run here);
WebGL (the sigma.js graph) runs on SwiftShader, Chromium's software renderer.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """`$LSM_CHROMIUM`, else `chromium` / `chromium-browser` on the PATH."""
    return os.environ.get("LSM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def served(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def browser() -> Iterator:
    """A headless Chromium (Playwright) or RuntimeError naming what to install."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium: `apt-get install -y chromium` (make test does), or set LSM_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def node_position(page, node: int) -> tuple[float, float]:
    """Where sampled node `node` of the Society view is drawn, in page coordinates."""
    x, y = page.evaluate("""(k) => {
        const s = window.lsm.sigma, d = s.getNodeDisplayData(String(k)), v = s.framedGraphToViewport(d);
        const r = document.getElementById('soc-graph').getBoundingClientRect();
        return [v.x + r.left, v.y + r.top]; }""", node)
    return float(x), float(y)


def painted_fraction(png: bytes) -> float:
    """Share of an element screenshot's pixels that differ from its most common (background) colour."""
    import io

    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(a, axis=0, return_counts=True)
    return float(1 - counts.max() / len(a))

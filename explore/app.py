"""`lsm explore`: the web explorer's HTTP API (FastAPI) and its static front end.

Endpoints (every file is named as `/api/files` lists it: `<root>/<relative path>`):

- `GET /api/files`: the complete LSM files under the served folders.
- `GET /api/overview?file=`: decision shares, by-attribute tables, channel means and spreads,
  events with their reach, trigger firings (`aggregates.overview`, cached beside the file).
- `GET /api/compare?a=&b=`: B against A: share and channel differences and the `lsm validate` metrics.
- `GET /api/graph?file=&nodes=&seed=`: a laid-out snowball sample of the social graph.
- `GET /api/agent?file=&id=`: one agent's record; `GET /api/attention?file=&id=`: its
  attention by tie type (student rollouts; replays the rollout with its checkpoint).
- `POST /api/narrate {file, agent, question?}`: a narrative or interview answer of a rollout's or
  teacher trace's agent (`narrate.narrator`) with its four checks, streamed as JSON lines
  (queued, running, done) from the one LLM queue.
- `GET /api/whatif/base?file=`: a rollout's editable events; `POST /api/whatif {base, interventions}`
  and `POST /api/sweep {base, sweep, interventions}` start jobs (`interventions`: the intervention
  language's compact text or YAML list; `sweep`: `EDIT=VALUES`; the older `edits: [{event, field,
  value}]`, `sever: [types]` and a sweep's `event, field, values` are still accepted:
  `whatif.request_interventions`); `GET /api/jobs/{id}` follows one.
- `GET /api/scenarios`, `POST /api/rollout {world, scenario, seed?}`: a base rollout of the
  checkpoint on a served world (a job; the rollout lands in `whatif/` beside the world).

Errors are JSON `{"error": "..."}`: 404 for a file that is not served (absent, outside the
folders, path traversal), 400 for a bad parameter, 409 for an action the file cannot support.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsm.config import ConfigError, UsageError, load_config, resolve_config
from lsm.data_gen.teacher.config import TeacherConfig, make_backend
from lsm.explore import agent, aggregates, society, whatif
from lsm.explore.files import Catalog, FileInfo, NotServed, describe
from lsm.explore.jobs import USER_ERRORS, Jobs
from lsm.model.checkpoint import load_checkpoint
from lsm.narrate.narrator import narrate as write
from lsm.probes.readout import readout
from lsm.society.store import StoreError

STATIC = Path(__file__).resolve().parent / "static"


class Refused(RuntimeError):
    """The request is well-formed but this file cannot do it (409)."""


@dataclass
class ExploreConfig:
    paths: list[str]
    ckpt: str | None = None
    teacher: str = "embedded"
    """Teacher preset whose backend narrates (the embedded SmolLM2 by default)."""


def create_app(cfg: ExploreConfig):
    from fastapi import Body, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles


    catalog = Catalog(cfg.paths)
    jobs = Jobs(USER_ERRORS + (ConfigError, StoreError, UsageError, Refused))
    app = FastAPI(title="LSM explorer", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.catalog = catalog
    app.state.jobs = jobs

    def err(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(NotServed)
    async def _not_served(_: Request, e: NotServed):
        return err(404, str(e))

    @app.exception_handler(Refused)
    async def _refused(_: Request, e: Refused):
        return err(409, str(e))

    for exc in (ValueError, IndexError, ConfigError, UsageError, StoreError, KeyError):
        @app.exception_handler(exc)
        async def _bad(_: Request, e: Exception):
            return err(400, str(e).strip("'\""))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in x['loc'] if p not in ('query', 'body'))}: {x['msg']}" for x in e.errors()]
        return err(400, "bad request: " + "; ".join(parts))

    def lsm_file(name: str) -> tuple[Path, FileInfo]:
        path = catalog.resolve(name)
        info = describe(path, name)
        if info is None:
            raise NotServed(f"{name!r} is not a complete LSM file")
        return path, info

    def trace_info(name: str) -> tuple[Path, FileInfo]:
        path, info = lsm_file(name)
        if info.kind == "world":
            raise Refused(f"{name} is a world (no ticks); open a teacher trace or a student rollout")
        return path, info

    def trace(name: str) -> Path:
        return trace_info(name)[0]

    @lru_cache(maxsize=2)
    def student_at(path: str):

        return load_checkpoint(path)

    def student_for(rollout: Path):
        ck = agent.find_checkpoint(rollout, cfg.ckpt)
        if ck is None:
            raise Refused(f"the checkpoint that wrote {rollout.name} is not found; start lsm explore with --ckpt DIR")
        return student_at(str(ck.resolve()))

    backend_lock = threading.Lock()
    backend_box: list[Any] = []

    def narration_backend():
        with backend_lock:
            if not backend_box:

                backend_box.append(make_backend(load_config(TeacherConfig, resolve_config(cfg.teacher, "teacher"),
                                                            kind="teacher config")))
            return backend_box[0]

    @app.get("/api/health")
    def health():
        return {"status": "ok", "roots": [str(r) for r in catalog.roots]}

    @app.get("/api/files")
    def files():
        return {"roots": [str(r) for r in catalog.roots], "files": [f.to_dict() for f in catalog.files()],
                "checkpoint": cfg.ckpt}

    @app.get("/api/overview")
    def overview(file: str = Query(..., description="a served file name")):
        return aggregates.overview(trace(file))

    @app.get("/api/compare")
    def compare(a: str, b: str):
        return aggregates.compare(trace(a), trace(b))

    @app.get("/api/graph")
    def graph(file: str, nodes: int = Query(society.DEFAULT_NODES, ge=10, le=society.MAX_NODES),
              seed: int = Query(0, ge=0, le=1_000_000)):
        path, _ = lsm_file(file)  # a world too: its graph without decisions
        return aggregates.cached(path, f"graph{nodes}s{seed}", lambda p: society.graph_sample(p, nodes, seed))

    @app.get("/api/agent")
    def agent_record(file: str, id: int = Query(..., ge=0)):  # noqa: A002 - the query parameter's name
        return agent.agent_record(trace(file), id)

    @app.get("/api/attention")
    def attention(file: str, id: int = Query(..., ge=0)):  # noqa: A002
        path, info = trace_info(file)
        if info.kind != "student_rollout":
            raise Refused(f"{file} is not a student rollout: attention weights exist only for the student")
        if id >= info.agents:
            raise ValueError(f"agent {id} is not in this file (agents 0..{info.agents - 1})")
        return {"ticks": agent.attention(student_for(path), path, id)}

    @app.post("/api/narrate")
    def narrate(body: dict = Body(...)):

        path, info = trace_info(_str(body, "file"))
        i = _int(body, "agent")
        question = body.get("question")
        if question is not None and (not isinstance(question, str) or not question.strip() or len(question) > 500):
            raise ValueError("question: a non-empty text of at most 500 characters")
        if not 0 <= i < info.agents:
            raise ValueError(f"agent {i} is not in {path.name} (agents 0..{info.agents - 1})")
        student = student_for(path) if info.kind == "student_rollout" else None  # a teacher trace is read as written

        def work(job):
            job.update(progress=0.1, message="reading the agent's record" + (" (replaying the rollout)" if student else ""))
            record = readout(path, i, None, student)
            job.update(progress=0.3, message="loading the LLM" if not backend_box else "the LLM is writing")
            backend = narration_backend()
            job.update(progress=0.4, message="the LLM is writing")
            nar = write(record, backend, question=question.strip() if question else None)
            return {"agent": nar.agent, "name": nar.name, "text": nar.text, "checks": nar.checks, "passed": nar.passed,
                    "fallback": nar.fallback, "kind": nar.kind, "attempts": nar.attempts, "question": nar.question,
                    "seconds": round(nar.seconds, 2), "problems": nar.problems, "llm_text": nar.llm_text}

        job = jobs.submit("llm", f"{'interview' if question else 'narrate'} agent {i}", work)

        def lines():  # every status change since the job was queued, then the result
            while True:
                ev = job.events.get()
                yield json.dumps(ev) + "\n"
                if ev["state"] in ("done", "failed"):
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/api/whatif/base")
    def whatif_base(file: str):
        path = trace(file)
        base = whatif.Base(path)
        info = base.describe()
        info["checkpoint"] = str(agent.find_checkpoint(path, cfg.ckpt) or "") or None
        return info

    @app.post("/api/whatif")
    def start_whatif(body: dict = Body(...)):
        path = trace(_str(body, "base"))
        base = whatif.Base(path)
        edits = whatif.request_interventions(body, len(base.events))
        if not edits:
            raise ValueError("a what-if needs at least one edit or a severed tie type")
        base.check(edits)
        student = student_for(path)

        def work(job):
            out = whatif.run_whatif(student, base, edits, lambda p, m: job.update(progress=p, message=m))
            return {"file": catalog.name_of(out), "base": catalog.name_of(path), "interventions": edits.to_list()}

        return jobs.submit("student", f"what-if {edits.slug}", work).public()

    @app.get("/api/scenarios")
    def scenarios():
        return {"scenarios": list(whatif.scenario_choices(catalog))}

    @app.post("/api/rollout")
    def start_base(body: dict = Body(...)):
        world, info = lsm_file(_str(body, "world"))
        if info.kind != "world":
            raise ValueError(f"world: {body['world']} is not a world file (from lsm world)")
        choices = whatif.scenario_choices(catalog)
        name = _str(body, "scenario")
        if name not in choices:
            raise ValueError(f"scenario {name!r}: one of {', '.join(choices)}")
        seed = body.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 31:
            raise ValueError(f"seed: a non-negative integer (got {seed!r})")
        ck = Path(cfg.ckpt) if cfg.ckpt else next((c for c in (world.parent / "runs" / "checkpoints",) if c.exists()), None)
        if ck is None:
            raise Refused("a base rollout needs the student: start lsm explore with --ckpt DIR")

        def work(job):
            out = whatif.run_base(ck, world, Path(choices[name]), name, seed,
                                  lambda p, m: job.update(progress=p, message=m))
            return {"file": catalog.name_of(out)}

        return jobs.submit("student", f"base rollout {Path(name).stem} on {world.name}", work).public()

    @app.post("/api/sweep")
    def start_sweep(body: dict = Body(...)):
        path = trace(_str(body, "base"))
        base = whatif.Base(path)
        if "sweep" not in body:
            _int(body, "event")
        axis, edits = whatif.request_sweep(body, len(base.events))
        for v in axis.values:  # every point fits the scenario (its checker's message), before any work
            base.check(edits + axis.edits_at(v))
        student = student_for(path)

        def work(job):
            return whatif.run_sweep(student, base, axis, edits, lambda p, m: job.update(progress=p, message=m))

        return jobs.submit("student", f"sweep {axis.name}", work).public()

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        try:
            return jobs.get(job_id).public()
        except LookupError as e:
            return err(404, str(e))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        from fastapi.responses import Response

        return Response(status_code=204)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _str(body: dict, key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key}: a served file name such as '0/rollout.h5' (got {v!r})")
    return v


def _int(body: dict, key: str) -> int:
    v = body.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{key}: an integer (got {v!r})")
    return v


def serve(cfg: ExploreConfig, host: str = "127.0.0.1", port: int = 8765, echo=print) -> None:
    """Serve until interrupted, printing the URL first (`port` 0: a free port, printed)."""
    import socket

    import uvicorn


    app = create_app(cfg)
    files = app.state.catalog.files()
    if not files:
        raise UsageError(f"no complete LSM file (world, trace or rollout) under {', '.join(cfg.paths)}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: binding {host}: anyone who can reach this machine can read the served files and start runs")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot serve on {host}:{port} ({err.strerror}); pick another --port (0: any free one)") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them: the URL works once printed
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    echo(f"LSM explorer: {len(files)} files under {', '.join(str(r) for r in app.state.catalog.roots)}")
    echo(f"Open http://{'[' + host + ']' if ':' in host else host}:{port}/  (Ctrl-C to stop)", flush=True)
    server.run(sockets=[sock])

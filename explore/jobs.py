"""Work the explorer does in the background, one job at a time per kind.

Two single-thread queues: `llm` (narration and interviews: the CPU LLM is never asked twice at
once) and `student` (what-if rollouts and sweeps: two torch jobs on a few cores run slower
than one after the other). A job reports progress and a result; a request can follow it by
polling `GET /api/jobs/{id}` or, for narration, by reading the streamed lines of its response.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, OSError)
"""Errors whose message is shown to the user as is (a bad edit, a missing checkpoint)."""


@dataclass
class Job:
    id: str
    kind: str
    label: str
    state: str = "queued"
    """queued | running | done | failed."""
    progress: float = 0.0
    """0..1."""
    message: str = ""
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    """Wall-clock time the worker took it up."""
    finished: float | None = None
    seconds: float | None = None
    events: "queue.Queue[dict]" = field(default_factory=queue.Queue, repr=False)
    """Every status change, for a streamed response."""

    def update(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)
        self.events.put(self.public())

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "label": self.label, "state": self.state, "progress": round(self.progress, 4),
                "message": self.message, "result": self.result if self.state == "done" else None, "error": self.error,
                "started": self.started, "finished": self.finished, "seconds": self.seconds}


class JobQueue:
    """One worker thread running jobs in order."""

    def __init__(self, kind: str, user_errors: tuple[type[BaseException], ...] = USER_ERRORS):
        self.kind = kind
        self.user_errors = user_errors
        self.pending: "queue.Queue[tuple[Job, Callable[[Job], Any]]]" = queue.Queue()
        self.order: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name=f"lsm-explore-{kind}", daemon=True)
        self.thread.start()

    def submit(self, job: Job, fn: Callable[[Job], Any]) -> Job:
        with self.lock:
            self.order.append(job.id)
        job.update(message=f"queued ({self.position(job.id)} ahead)")
        self.pending.put((job, fn))
        return job

    def position(self, job_id: str) -> int:
        """Jobs ahead of this one (the running one included)."""
        with self.lock:
            return self.order.index(job_id) if job_id in self.order else 0

    def _work(self) -> None:
        while True:
            job, fn = self.pending.get()
            t0 = time.perf_counter()
            job.update(state="running", message="running", started=time.time())
            ended: dict[str, Any]
            try:
                ended = dict(state="done", progress=1.0, result=fn(job), message="done")
            except self.user_errors as err:
                ended = dict(state="failed", error=str(err), message="failed")
            except Exception as err:  # noqa: BLE001 - a job must never kill the worker
                traceback.print_exc()
                ended = dict(state="failed", error=f"{type(err).__name__}: {err}", message="failed")
            with self.lock:
                self.order.remove(job.id)  # before the last update: a job seen ended is no longer ahead of anyone
            job.update(**ended, finished=time.time(), seconds=round(time.perf_counter() - t0, 2))


class Jobs:
    """Every job of an explorer, by id, and the queues that run them."""

    def __init__(self, user_errors: tuple[type[BaseException], ...] = USER_ERRORS):
        self.queues = {k: JobQueue(k, user_errors) for k in ("llm", "student")}
        self.by_id: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def submit(self, kind: str, label: str, fn: Callable[[Job], Any]) -> Job:
        job = Job(f"{kind}-{next(self._ids)}", kind, label)
        self.by_id[job.id] = job
        return self.queues[kind].submit(job, fn)

    def get(self, job_id: str) -> Job:
        if job_id not in self.by_id:
            raise LookupError(f"no job {job_id!r}")
        return self.by_id[job_id]

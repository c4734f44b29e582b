"""Speed and memory of the student (and the teacher) per population size (`lsm bench`).

The student is timed on synthetic populations of the requested size: identities drawn from the
checkpoint's vocabulary (or random codes), random unit persona embeddings, a random graph with
`neighbors` typed in-edges per agent, and a few events exposed to a fraction of the agents. The
cost of one tick depends on N, E and the widths only, not on the values, so this measures what
a rollout of a world of that size costs without building one (the sentence encoder alone would
take hours on 1M personas here).

Notation: N agents | K shown neighbours per agent | E = N·K edges | Ev events | V exposures.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import torch

from lsm.config import CONFIG_ROOT, resolve_config
from lsm.data_gen.gen import generate
from lsm.model.checkpoint import load_checkpoint
from lsm.model.chunks import auto_chunk, forward_chunk
from lsm.model.society import Draws, SocietyModel, StudentConfig, TickInputs
from lsm.model.tick import advance
from lsm.society import seeds
from lsm.society.scenario import shorten
from lsm.society.store import TraceFile
from lsm.society.world import build_world, save_world
from lsm.society.world.graph import peak_rss_gb
from lsm.society.world.population import IdentityVocab


@dataclass
class StudentTiming:
    agents: int
    edges: int
    seconds_per_tick: float
    agent_ticks_per_s: float
    peak_rss_gb: float
    """Process peak resident memory after the run (ru_maxrss; monotone over the process)."""
    peak_gpu_gb: float | None = None


def synthetic_inputs(cfg: StudentConfig, n: int, neighbors: int = 20, actions: int = 3, events: int = 4,
                     exposure: float = 0.3, seed: int = 0, device: str | torch.device = "cpu",
                     padded_table: bool = True) -> TickInputs:
    """Random inputs of the right shapes; `padded_table` also fills the (N, K) neighbour table
    that rollouts use (the model then takes the dense-gather path)."""
    g = seeds.torch_generator(seed, seeds.Stream.SYNTHETIC_INPUTS)
    cat = torch.stack([torch.randint(0, k, (n,), generator=g) for k in cfg.categorical_sizes], 1) if cfg.categorical_sizes \
        else torch.zeros(n, 0, dtype=torch.long)  # (N, n_cat)
    num = torch.rand(n, cfg.numeric_dim, generator=g)  # (N, n_num)
    persona = torch.nn.functional.normalize(torch.randn(n, cfg.text_dim, generator=g), dim=-1)  # (N, T)
    receivers = torch.arange(n).repeat_interleave(neighbors)  # (E,)
    senders = (receivers + torch.randint(1, max(n, 2), (n * neighbors,), generator=g)) % n  # no self loops
    edge_type = torch.randint(0, 5, (n * neighbors,), generator=g)
    padded = (senders.view(n, neighbors), edge_type.view(n, neighbors)) if padded_table else (None, None)
    ev_cat = torch.stack([torch.randint(0, k, (events,), generator=g) for k in cfg.event_vocab_sizes], 1)
    ev_num = torch.rand(events, len(cfg.event_features), generator=g)
    ev_emb = torch.nn.functional.normalize(torch.randn(events, cfg.text_dim, generator=g), dim=-1)
    who = torch.nonzero(torch.rand(n, generator=g) < exposure).squeeze(1)  # (V,)
    exposure_index = torch.stack([who, torch.randint(0, events, (len(who),), generator=g)])
    action_emb = torch.nn.functional.normalize(torch.randn(actions, cfg.text_dim, generator=g), dim=-1)
    draws = Draws(uniform=torch.rand(n, generator=g), stance_eps=torch.randn(n, generator=g) if cfg.stance_noise else None,
                  channel_eps=torch.randn(n, cfg.channels, generator=g) if cfg.channel_effects else None)  # as a rollout draws
    inp = TickInputs(cat, num, persona, torch.stack([senders, receivers]), edge_type, ev_cat, ev_num, ev_emb,
                     exposure_index, action_emb, *padded, draws=draws)
    return inp.to(device)


@torch.inference_mode()
def time_student(model: SocietyModel, n: int, ticks: int = 3, neighbors: int = 20, warmup: int = 1,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, padded: bool = True,
                 agent_chunk: int = 0, chunk: int = 0) -> StudentTiming:
    """Seconds per tick of `model` advancing `n` agents (after `warmup` ticks), state carried over;
    `chunk` agents per forward pass as rollouts run it (`forward_in_chunks`; 0: one pass)."""
    model = model.to(device=device, dtype=dtype).eval()
    model.agent_chunk = agent_chunk
    step = (lambda s: advance(model, s, inp, chunk=chunk if padded else 0))  # noqa: E731 -- as a rollout runs it
    inp = synthetic_inputs(model.cfg, n, neighbors, device=device, padded_table=padded)
    cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    inp = TickInputs(**{k: cast(t) for k, t in vars(inp).items() if k != "draws"},
                     draws=Draws(**{k: cast(t) for k, t in vars(inp.draws).items()}) if inp.draws is not None else None)
    state = model.initial_state(n, inp.action_emb.shape[0], device=device)
    state = type(state)(**{k: v.to(dtype) for k, v in vars(state).items()})
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        state, _ = step(state)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(ticks):
        state, _ = step(state)
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / ticks
    gpu = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return StudentTiming(n, n * neighbors, dt, n / dt, peak_rss_gb(), gpu)


def default_student(ckpt: str | None = None) -> SocietyModel:
    """The checkpoint's student, or an untrained one with the `small` preset's widths and the
    reference corpus's identity vocabulary (a tick's cost does not depend on the weights)."""
    if ckpt:

        return load_checkpoint(ckpt).model

    corpus = CONFIG_ROOT.parent / "data_gen/corpus/n20/vaccine_campaign_s0.h5"
    with TraceFile(corpus) as tf:
        pop, _ = tf.world()
    vocab = IdentityVocab.of(pop)
    torch.manual_seed(0)
    return SocietyModel(StudentConfig.from_preset("small", categorical_sizes=vocab.cardinalities, numeric_dim=len(vocab.numeric)))


@torch.inference_mode()
def flops_per_agent_tick(model: SocietyModel, n: int = 2000, neighbors: int = 20) -> float:
    """Floating-point operations of one tick per agent, counted by torch's FlopCounterMode
    (matmuls and einsums; gathers, scatters, softmax and elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    inp = synthetic_inputs(model.cfg, n, neighbors)
    state = model.initial_state(n, inp.action_emb.shape[0])
    with FlopCounterMode(display=False) as counter:
        model(inp, state)
    return counter.get_total_flops() / n


def matmul_gflops(size: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    """Measured float32 matmul throughput of this machine (GFLOP/s)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9


def time_teacher(teacher: str = "embedded", agents: int = 8, seed: int = 0) -> dict:
    """Teacher agent-ticks per second of LLM time: one tick of the vaccine campaign on a small
    ANES world (model load excluded; every agent answers with decision, 8 ratings and texts)."""
    import tempfile
    from pathlib import Path

    import yaml


    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_world(build_world(resolve_config("anes96", "population"), resolve_config("default", "graph"), agents, seed), tmp / "w.h5")
        sc = yaml.safe_load(resolve_config("vaccine_campaign", "scenarios").read_text())
        sc = shorten(sc, 1)
        sc["triggers"] = []
        (tmp / "sc.yaml").write_text(yaml.safe_dump(sc))
        s = generate(tmp / "w.h5", tmp / "sc.yaml", resolve_config(teacher, "teacher"), seed, tmp / "t.h5", quiet=True)
    return {"teacher": teacher, "agents": agents, "agent_ticks": s["agent_ticks"], "llm_seconds": s["llm_seconds"],
            "agent_ticks_per_s": s["agent_ticks_per_llm_second"], "tokens_per_s": s["tokens_per_llm_second"]}


def _one_size(args: list[str]) -> None:
    """Subprocess entry: time one population size and print its JSON (own peak RSS)."""
    n, ckpt, device, ticks = int(args[0]), (args[1] or None), args[2], int(args[3])
    model = default_student(ckpt)
    chunk = forward_chunk(device)
    r = time_student(model, n, ticks=ticks, device=device, agent_chunk=0 if chunk else auto_chunk(n), chunk=chunk)
    print("BENCH " + json.dumps(asdict(r)))


def bench_sizes(sizes: list[int], ckpt: str | None, device: str = "cpu", ticks: int = 2, timeout: float = 3600) -> list[dict]:
    """Each size in a fresh process (so its peak memory is its own); a size that runs out of
    memory or time is reported with its error instead of aborting the bench."""
    import subprocess
    import sys

    out = []
    for n in sizes:
        cmd = [sys.executable, "-m", "lsm.infer.bench", str(n), ckpt or "", device, str(ticks)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            out.append({"agents": n, "error": f"timed out after {timeout:.0f} s"})
            continue
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("BENCH ")]
        if p.returncode != 0 or not line:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
            out.append({"agents": n, "error": f"exit {p.returncode}: {tail[0][:200]}"})
            continue
        out.append(json.loads(line[0][6:]))
    return out


if __name__ == "__main__":  # pragma: no cover - subprocess entry of bench_sizes
    import sys

    _one_size(sys.argv[1:])

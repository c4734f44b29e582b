"""The HDF5 store: worlds, teacher traces and student rollouts (docs/design.md §5).

One self-describing file per world / run. Root attributes: `schema_version`, `kind`
(`world`, `teacher_trace`, `student_rollout`), `complete`, `ticks_complete`, seeds, package
versions, every config as YAML (`config.<name>`), and, once complete, `content_checksum` and
`dataset_checksums` (SHA-256 of every dataset; `verify_checksums`, `lsm info --verify`). Groups
`population/` and `graph/` hold the world (copied into every trace so a trace alone rebuilds
everything); `scenario/` holds the scenario YAML and `events/` the table of event instances
(scheduled and triggered).

Per-tick datasets have shape [T, N, ...] and are appended one tick at a time (chunked one
tick by up to 2^16 agents, gzip+shuffle), so a 10^6-agent rollout streams to disk. Which
per-tick fields exist is declared when the file is created (`TRACE_FIELDS` lists them all with
their dims); the writer checks every tick's arrays against that declaration.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np
import yaml

from lsm.documents import parse_document
from lsm.society.scenario import EVENT_FEATURE_DEFAULTS, EVENT_FEATURES, scenario_from_dict

SCHEMA_VERSION = "1.1"
"""1.1 (2026-12): a teacher trace may hold `decision_dist_order_sd` and `contrast_dist` (with the
`contrasts` attribute); 1.0 files are read as before."""
KINDS = ("world", "teacher_trace", "student_rollout")
AGENT_CHUNK = 1 << 16
"""At most this many agents per chunk of a per-tick field."""


def agent_chunk(n: int) -> int:
    """Agents per chunk for N agents: at most `AGENT_CHUNK`, the chunks of one tick equal in size
    (100,000 agents: 2 x 50,000, not 65,536 + a padded 34,464, which uncompressed fields store
    in full)."""
    if n <= 0:
        return 1
    return -(-n // -(-n // AGENT_CHUNK))
STR = h5py.string_dtype(encoding="utf-8")


class StoreError(RuntimeError):
    """A file cannot be used: not HDF5, truncated, wrong kind or version, missing data."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    dims: tuple[str, ...]
    """Per-tick dims (the leading T is implied). Letters: N agents, C channels, R rating levels
    (11), A actions, D text-embedding dim, K shown neighbours, E events per agent-tick,
    Z free latent, H memory summary, X paired contrasts."""
    dtype: str
    doc: str
    fill: Any = 0

    @property
    def h5dtype(self):
        return STR if self.dtype == "str" else np.dtype(self.dtype)

    @property
    def compression(self) -> dict[str, Any]:
        """How the field is stored, chosen by measurement (10^5 agents, these cores): gzip level 1
        with shuffle halves int and float32 fields (91 -> 53 MB) at ~45 MB/s; float16 fields
        (embeddings, latents) are noise to gzip (-14 to -27%, at 31-46 MB/s against 190-1100
        MB/s uncompressed), so they are stored as they are."""
        if self.dtype == "float16":
            return {}
        return dict(compression="gzip", compression_opts=1, shuffle=self.dtype != "str")


TRACE_FIELDS: dict[str, FieldSpec] = {f.name: f for f in [
    FieldSpec("channels", ("N", "C"), "float32", "anchored channel values, 0..1 (teacher rating / 10)"),
    FieldSpec("channel_dist", ("N", "C", "R"), "float16", "distribution over the 11 rating levels per channel"),
    FieldSpec("decision", ("N",), "int16", "action index (bin index for numeric actions); -1 if invalid", -1),
    FieldSpec("decision_value", ("N",), "float32", "numeric actions: the reported number", np.nan),
    FieldSpec("decision_dist", ("N", "A"), "float32", "distribution over actions / bins"),
    FieldSpec("decision_dist_order_sd", ("N", "A"), "float32",
              "teacher: standard deviation of the decision distribution across the orders of the shown messages "
              "(`decision_dist` is their average; 0 with one order)"),
    FieldSpec("contrast_dist", ("N", "X", "A"), "float32",
              "teacher: decision distribution under each paired contrast (attribute `contrasts` names the X axis; "
              "scored without the reasoning); NaN where the agent-tick was not sampled", np.nan),
    FieldSpec("stance", ("N",), "float32", "public stance of the expression, -1..1"),
    FieldSpec("expression_emb", ("N", "D"), "float16", "sentence embedding of the public expression"),
    FieldSpec("reasoning_emb", ("N", "D"), "float16", "sentence embedding of the private reasoning"),
    FieldSpec("salience", ("N",), "float32", "salience of this tick's memory, 0..1"),
    FieldSpec("shown_neighbors", ("N", "K"), "int32", "ids of the neighbours whose messages were shown; -1 padded", -1),
    FieldSpec("exposed_events", ("N", "E"), "int32", "uids (into events/) of the events seen this tick; -1 padded", -1),
    FieldSpec("valid", ("N",), "bool", "the agent-tick holds a valid answer"),
    FieldSpec("error", ("N",), "str", "why an agent-tick is invalid (empty when valid)", ""),
    FieldSpec("reasoning", ("N",), "str", "free-text private reasoning", ""),
    FieldSpec("expression", ("N",), "str", "public message broadcast to neighbours", ""),
    FieldSpec("salient_memory", ("N",), "str", "what the agent chose to remember", ""),
    FieldSpec("attempts", ("N",), "int8", "LLM calls used (1 = first answer valid)"),
    FieldSpec("tokens_prompt", ("N",), "int32", "prompt tokens"),
    FieldSpec("tokens_completion", ("N",), "int32", "completion tokens"),
    FieldSpec("latency_s", ("N",), "float32", "seconds of LLM time attributed to the agent-tick"),
    FieldSpec("latent", ("N", "Z"), "float16", "student: free latent state"),
    FieldSpec("memory", ("N", "H"), "float16", "student: recurrent memory summary"),
]}
REQUIRED_FIELDS = ("channels", "decision", "stance", "salience", "exposed_events", "valid")
EVENT_COLUMNS = {
    "uid": "int32", "tick": "int32", "origin": "str", "source": "str", "source_type": "str",
    "channel": "str", "framing": "str", **{name: "float32" for name in EVENT_FEATURES}, "text": "str",
}
"""The `events/` table: one float32 column per numeric event feature (`EVENT_FEATURES`)."""


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lsm", "torch", "numpy", "h5py", "datasets", "transformers", "lightning"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- content checksums
CHECKSUM_ALGO = "sha256"
"""The hash of `content_checksums`: SHA-256 hashes 1.47 GB/s on these cores, BLAKE2b 0.61 GB/s
(measured on 200 MB; CPUs with SHA extensions). Per dataset the first 32 hex digits are kept."""
_HASH_BLOCK_BYTES = 1 << 26
"""A dataset is read and hashed at most ~64 MiB at a time (row blocks along axis 0, or parts of one
row along axis 1): a multi-GB rollout is never loaded whole."""


class _ValueHash:
    """SHA-256 of a dataset's values in C order, fed block by block. Strings are hashed as their
    UTF-8 bytes, each followed by a NUL (their in-memory form holds pointers; HDF5 refuses NULs
    inside strings, so the encoding is unambiguous)."""

    def __init__(self, strings: bool):
        import hashlib

        self.strings, self.h = strings, hashlib.sha256()

    def update(self, block: np.ndarray) -> None:
        if self.strings:
            for v in np.asarray(block, dtype=object).ravel():
                self.h.update((v if isinstance(v, bytes) else str(v).encode()) + b"\0")
        else:
            self.h.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)  # the raw bytes, not copied

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _is_str(dtype: np.dtype) -> bool:
    return h5py.check_string_dtype(dtype) is not None or dtype == object


def _digest_of(path: str, dtype: np.dtype, shape: tuple[int, ...], values: _ValueHash) -> str:
    """The digest of one dataset: its path, dtype, shape and the hash of its values."""
    import hashlib

    return hashlib.sha256(f"{path}\0{dtype.str}\0{tuple(shape)}\0{values.hexdigest()}".encode()).hexdigest()[:32]


def _blocks(ds: h5py.Dataset) -> Iterable[np.ndarray]:
    """The values of `ds` in C order, about `_HASH_BLOCK_BYTES` at a time."""
    if ds.shape == () or ds.size == 0:
        yield np.asarray(ds[()])
        return
    item = 64 if _is_str(ds.dtype) else ds.dtype.itemsize  # strings: a guess at their length
    row = int(np.prod(ds.shape[1:], dtype=np.int64)) * item
    if row <= _HASH_BLOCK_BYTES or ds.ndim == 1:
        step = max(1, _HASH_BLOCK_BYTES // max(row, 1))
        for i in range(0, ds.shape[0], step):
            yield ds[i:i + step]
        return
    step = max(1, _HASH_BLOCK_BYTES // max(row // ds.shape[1], 1))  # one row is too big: split it along axis 1
    for i in range(ds.shape[0]):
        for j in range(0, ds.shape[1], step):
            yield ds[i, j:j + step]


def dataset_digest(ds: h5py.Dataset) -> str:
    """The digest of one dataset, read back from the file block by block."""
    values = _ValueHash(_is_str(ds.dtype))
    try:
        for block in _blocks(ds):
            values.update(block)
    except OSError as err:  # e.g. a corrupted compressed chunk
        raise StoreError(f"{ds.file.filename}: dataset '{ds.name.lstrip('/')}' cannot be read ({err}); "
                         "the file was corrupted after it was written") from None
    return _digest_of(ds.name, ds.dtype, ds.shape, values)


def content_checksums(f: h5py.File, known: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(whole-file digest, {dataset path: digest}) over every dataset in sorted path order.

    `known` holds digests a writer computed while writing (`TraceWriter` hashes each tick as it
    appends it, so a multi-GB rollout is not read back); every other dataset is read back.
    Attributes are not covered: they are metadata (a summary, a sensitivity result added later by
    `lsm sensitivity --write`), and adding one must not invalidate the content."""
    import hashlib

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    known = known or {}
    per = {name: known[name] if name in known else dataset_digest(f[name]) for name in sorted(names)}
    whole = hashlib.sha256()
    for name, d in per.items():
        whole.update(f"{name}\0{d}\0".encode())
    return whole.hexdigest(), per


def write_checksums(f: h5py.File, known: dict[str, str] | None = None) -> None:
    """Store `content_checksum` ("sha256:HEX") and `dataset_checksums` (JSON {path: 32 hex}) as
    root attributes; called by every writer as it marks a file complete."""
    whole, per = content_checksums(f, known)
    f.attrs["content_checksum"] = f"{CHECKSUM_ALGO}:{whole}"
    f.attrs["dataset_checksums"] = json.dumps(per)


def verify_checksums(path: str | Path) -> str:
    """Recompute a file's checksums: the line `lsm info --verify` prints, or `StoreError` naming the
    first dataset whose content changed. A file without checksums (written before lsm stored them,
    or a run that never finished) says so and is not an error: it is as valid as it ever was."""
    with open_h5(path) as f:
        stored = str(f.attrs.get("content_checksum", ""))
        if not stored:
            why = ("the file was written before lsm stored checksums" if f.attrs.get("complete", True)
                   else "the run did not finish; checksums are written when a file is complete")
            return f"checksum: none stored ({why}); unverifiable"
        algo, _, want = stored.partition(":")
        if algo != CHECKSUM_ALGO:
            raise StoreError(f"{path}: checksum algorithm {algo!r} is not known to this lsm ({CHECKSUM_ALGO})")
        whole, per = content_checksums(f)
        if whole == want:
            return f"checksum: OK ({CHECKSUM_ALGO} {whole[:16]})"
        recorded = json.loads(str(f.attrs.get("dataset_checksums", "{}")))
        changed = [n for n in sorted(set(per) | set(recorded)) if per.get(n) != recorded.get(n)]
        where = f"; first changed dataset: {changed[0]}" if changed else ""
        raise StoreError(f"{path}: content checksum mismatch: stored {CHECKSUM_ALGO} {want[:16]}, computed {whole[:16]}"
                         f"{where} (the file was modified or corrupted after it was written)")


# --------------------------------------------------------------------------- opening files
def open_h5(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level errors into a `StoreError` a user can act on."""
    path = Path(path)
    if mode == "r" and path.is_dir():
        raise StoreError(f"{path}: is a directory; expected an LSM HDF5 file")
    if mode == "r" and not path.is_file():
        raise StoreError(f"{path}: no such file")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        msg = str(err)
        if "truncated" in msg:
            why = "it is truncated (the process writing it was probably killed); re-run the command that wrote it"
        elif "signature" in msg or "not an HDF5" in msg.lower():
            why = "it is not an HDF5 file"
        elif "lock" in msg.lower():
            why = "another process has it open for writing"
        else:
            why = msg
        raise StoreError(f"{path}: cannot open as an LSM file: {why}") from None


def check_header(f: h5py.File, kinds: Sequence[str] | None = None) -> str:
    """Validate schema version and kind; return the kind."""
    name = f.filename
    if "schema_version" not in f.attrs:
        raise StoreError(f"{name}: not an LSM file (no 'schema_version' attribute)")
    version = str(f.attrs["schema_version"])
    major, minor = (int(x) for x in version.split(".")[:2])
    ours_major, ours_minor = (int(x) for x in SCHEMA_VERSION.split("."))
    if major != ours_major or minor > ours_minor:
        raise StoreError(
            f"{name}: schema_version {version} is not readable by this LSM (reads {ours_major}.0-{SCHEMA_VERSION}); "
            "upgrade lsm or regenerate the file"
        )
    kind = str(f.attrs.get("kind", ""))
    if kinds is not None and kind not in kinds:
        raise StoreError(f"{name}: is a '{kind}' file; expected {' or '.join(repr(k) for k in kinds)}")
    return kind


def _require(f: h5py.File | h5py.Group, key: str, what: str) -> Any:
    if key not in f:
        raise StoreError(f"{f.file.filename}: missing dataset '{f.name.rstrip('/')}/{key}' ({what}); the file is incomplete or not of this kind")
    return f[key]


def _write_header(f: h5py.File, kind: str, configs: dict[str, Any], seeds: dict[str, int]) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["kind"] = kind
    f.attrs["complete"] = False
    f.attrs["package_versions"] = json.dumps(package_versions())
    f.attrs["seeds"] = json.dumps(seeds)
    for name, cfg in configs.items():
        f.attrs[f"config.{name}"] = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def read_configs(f: h5py.File) -> dict[str, Any]:
    from lsm.documents import parse_document  # bounded: a file's attributes are input like any config

    return {k.split(".", 1)[1]: parse_document(str(v), f"{f.file.filename}:{k}") for k, v in f.attrs.items()
            if k.startswith("config.")}


# --------------------------------------------------------------------------- world groups
_COMPRESS = dict(compression="gzip", compression_opts=4, shuffle=True)


def write_world_groups(f: h5py.File | h5py.Group, pop, graph) -> None:
    """Write `population/` and `graph/` groups."""
    # here, not at the top: `lsm.society.world` imports this module (the world file is a store file)
    from lsm.society.world.graph import EDGE_TYPES
    from lsm.society.world.population import IdentityVocab

    p = f.create_group("population")
    p.attrs["n"] = pop.n
    p.attrs["source"] = pop.source
    p.attrs["synthetic"] = json.dumps(pop.synthetic)
    p.attrs["identity_vocab"] = json.dumps(IdentityVocab.of(pop).to_dict())
    cat = p.create_group("categorical")
    for a, codes in pop.categorical.items():
        d = cat.create_dataset(a, data=codes.astype(np.int16), **_COMPRESS)
        d.attrs["categories"] = json.dumps(pop.categories[a])
        d.attrs["description"] = pop.descriptions.get(a, "")
    num = p.create_group("numeric")
    for a, values in pop.numeric.items():
        d = num.create_dataset(a, data=values.astype(np.float32), **_COMPRESS)
        d.attrs["min"], d.attrs["max"] = pop.numeric_range[a]
        d.attrs["description"] = pop.descriptions.get(a, "")
    p.create_dataset("names", data=np.asarray(pop.names, dtype=object), dtype=STR, **_COMPRESS)
    p.create_dataset("persona", data=np.asarray(pop.persona, dtype=object), dtype=STR, **_COMPRESS)
    if pop.backstory is not None:
        p.create_dataset("backstory", data=np.asarray(pop.backstory, dtype=object), dtype=STR, **_COMPRESS)
    if pop.backstory_emb is not None:
        p.create_dataset("backstory_emb", data=np.asarray(pop.backstory_emb, dtype=np.float16), **_COMPRESS)

    g = f.create_group("graph")
    g.attrs["n"] = graph.n
    g.attrs["edge_types"] = json.dumps(list(EDGE_TYPES))
    g.attrs["outlets"] = json.dumps(graph.outlets)
    g.attrs["direction"] = "edge_index[0] = sender j, edge_index[1] = receiver i"
    g.create_dataset("edge_index", data=graph.edge_index, **_COMPRESS)
    g.create_dataset("edge_type", data=graph.edge_type, **_COMPRESS)
    g.create_dataset("edge_weight", data=graph.edge_weight, **_COMPRESS)
    g.create_dataset("household", data=graph.household, **_COMPRESS)
    g.create_dataset("outlet_follow", data=graph.outlet_follow, **_COMPRESS)
    g.create_dataset("leaders", data=graph.leaders, **_COMPRESS)


def read_world_groups(f: h5py.File | h5py.Group, persona: bool = True):
    """(Population, SocialGraph) from the `population/` and `graph/` groups; `persona` False:
    without the persona texts (an empty list), for a reader that never shows or writes them."""
    # here, not at the top: `lsm.society.world` imports this module
    from lsm.society.world.graph import SocialGraph
    from lsm.society.world.population import Population

    p = _require(f, "population", "the population")
    cat, num = _require(p, "categorical", "categorical attributes"), _require(p, "numeric", "numeric attributes")
    categorical = {a: cat[a][()] for a in cat}
    categories = {a: json.loads(cat[a].attrs["categories"]) for a in cat}
    numeric = {a: num[a][()] for a in num}
    numeric_range = {a: (float(num[a].attrs["min"]), float(num[a].attrs["max"])) for a in num}
    descriptions = {a: str(g[a].attrs.get("description", "")) for g in (cat, num) for a in g}
    # Keep the attribute order of the identity vocabulary (h5py lists keys alphabetically).
    vocab = json.loads(p.attrs["identity_vocab"])
    cat_order = [e["attribute"] for e in vocab["categorical"]]
    num_order = [e["attribute"] for e in vocab["numeric"]]
    pop = Population(
        categorical={a: categorical[a] for a in cat_order},
        categories={a: categories[a] for a in cat_order},
        numeric={a: numeric[a] for a in num_order},
        numeric_range={a: numeric_range[a] for a in num_order},
        names=[s.decode() if isinstance(s, bytes) else s for s in _require(p, "names", "agent names")[()]],
        persona=[s.decode() if isinstance(s, bytes) else s for s in _require(p, "persona", "persona texts")[()]] if persona else [],
        descriptions=descriptions,
        synthetic=json.loads(p.attrs.get("synthetic", "[]")),
        source=str(p.attrs.get("source", "")),
        backstory=[s.decode() if isinstance(s, bytes) else s for s in p["backstory"][()]] if "backstory" in p else None,
        backstory_emb=p["backstory_emb"][()] if "backstory_emb" in p else None,
    )
    g = _require(f, "graph", "the social graph")
    graph = SocialGraph(
        n=int(g.attrs["n"]),
        edge_index=_require(g, "edge_index", "graph edges")[()],
        edge_type=_require(g, "edge_type", "edge types")[()],
        edge_weight=_require(g, "edge_weight", "edge weights")[()],
        household=_require(g, "household", "household ids")[()],
        outlets=json.loads(g.attrs.get("outlets", "[]")),
        outlet_follow=g["outlet_follow"][()] if "outlet_follow" in g else np.zeros((2, 0), np.int32),
        leaders=g["leaders"][()] if "leaders" in g else np.zeros(0, np.int32),
    )
    if graph.n != pop.n:
        raise StoreError(f"{f.file.filename}: graph has {graph.n} agents but population has {pop.n}")
    return pop, graph


# --------------------------------------------------------------------------- trace writer
class TraceWriter:
    """Create a trace/rollout file and append one tick at a time.

    Args:
        path: output file (created; an existing file is replaced).
        kind: `teacher_trace` or `student_rollout`.
        world_file: the world's HDF5 file; its `population/`, `graph/` and configs are copied.
        scenario_yaml: the scenario as YAML text (stored in `scenario/` and `config.scenario`).
        dims: sizes of the per-tick dims used by `fields` (N, C, A, and as needed R, D, K, E, Z, H).
        fields: per-tick fields to store (REQUIRED_FIELDS are always included).
        configs: extra configs to embed (teacher, model, ...), YAML text or plain data.
        seeds: seeds of the run, recorded as JSON.
    """

    def __init__(self, path: str | Path, kind: str, world_file: str | Path, scenario_yaml: str,
                 dims: dict[str, int], fields: Iterable[str] = (), configs: dict[str, Any] | None = None,
                 seeds: dict[str, int] | None = None, ticks_planned: int | None = None):
        if kind not in ("teacher_trace", "student_rollout"):
            raise ValueError(f"kind must be teacher_trace or student_rollout, not {kind!r}")
        self.path = Path(path)
        self.fields = list(dict.fromkeys(list(REQUIRED_FIELDS) + list(fields)))
        unknown = [f for f in self.fields if f not in TRACE_FIELDS]
        if unknown:
            raise ValueError(f"unknown trace fields {unknown}; known: {list(TRACE_FIELDS)}")
        dims = {"R": 11, **dims}
        for name in self.fields:
            missing = [d for d in TRACE_FIELDS[name].dims if d not in dims]
            if missing:
                raise ValueError(f"field '{name}' needs dims {missing} (got {sorted(dims)})")
        self.dims = dims
        with open_h5(world_file) as wf:
            check_header(wf, ["world", "teacher_trace", "student_rollout"])
            world_configs = {k: v for k, v in wf.attrs.items() if k.startswith("config.")}
            world_seeds = json.loads(wf.attrs.get("seeds", "{}"))
            if int(wf["population"].attrs["n"]) != dims["N"]:
                raise ValueError(f"dims N={dims['N']} but the world has {int(wf['population'].attrs['n'])} agents")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.path, "w")
            wf.copy("population", self.f)
            wf.copy("graph", self.f)
        _write_header(self.f, kind, configs or {}, {**{f"world_{k}": v for k, v in world_seeds.items()}, **(seeds or {})})
        for k, v in world_configs.items():
            self.f.attrs[k] = v
        self.f.attrs["config.scenario"] = scenario_yaml
        self.f.attrs["dims"] = json.dumps(dims)
        self.f.attrs["fields"] = json.dumps(self.fields)
        self.f.attrs["ticks_complete"] = 0
        if ticks_planned is not None:
            self.f.attrs["ticks_planned"] = ticks_planned
        sc = self.f.create_group("scenario")
        sc.attrs["yaml"] = scenario_yaml
        ev = self.f.create_group("events")
        for col, dt in EVENT_COLUMNS.items():
            ev.create_dataset(col, shape=(0,), maxshape=(None,), dtype=STR if dt == "str" else dt, chunks=(256,))
        n = dims["N"]
        for name in self.fields:
            spec = TRACE_FIELDS[name]
            shape = tuple(dims[d] for d in spec.dims)
            chunks = (1, agent_chunk(n), *shape[1:])
            self.f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=spec.h5dtype,
                                  chunks=chunks, **spec.compression, fillvalue=None if spec.dtype == "str" else spec.fill)
        # per-tick fields are hashed tick by tick as they are written, so closing a multi-GB rollout
        # does not read it back (None after a write that failed half-way: then they are read back)
        self._hashes: dict[str, _ValueHash] | None = {name: _ValueHash(TRACE_FIELDS[name].dtype == "str") for name in self.fields}
        self.f.flush()

    @property
    def ticks_complete(self) -> int:
        return int(self.f.attrs["ticks_complete"])

    def add_events(self, events) -> None:
        """Append event instances (`dynamics.ScheduledEvent`) to the `events/` table."""
        ev = self.f["events"]
        known = set(ev["uid"][()].tolist())
        rows = [e for e in events if e.uid not in known]
        if not rows:
            return
        n0 = ev["uid"].shape[0]
        values = {
            "uid": [e.uid for e in rows], "tick": [e.tick for e in rows], "origin": [e.origin for e in rows],
            "source": [e.event.source for e in rows], "source_type": [e.event.source_type for e in rows],
            "channel": [e.event.channel for e in rows], "framing": [e.event.framing for e in rows],
            **{name: [getattr(e.event, name) for e in rows] for name in EVENT_FEATURES},
            "text": [e.event.text for e in rows],
        }
        for col, vals in values.items():
            ev[col].resize((n0 + len(rows),))
            ev[col][n0:] = np.asarray(vals, dtype=object if EVENT_COLUMNS[col] == "str" else EVENT_COLUMNS[col])

    def append_tick(self, data: dict[str, np.ndarray], run_state: dict[str, Any] | None = None) -> int:
        """Write one tick. `data` must hold exactly the declared fields with their shapes.

        `run_state` (JSON-able) is stored with the tick, for resuming a killed run.
        Returns the index of the tick written.
        """
        missing = [f for f in self.fields if f not in data]
        extra = [f for f in data if f not in self.fields]
        if missing or extra:
            raise ValueError(f"tick data for {self.path}: missing fields {missing}, undeclared fields {extra}")
        t = self.ticks_complete
        arrays = {}
        for name in self.fields:
            spec = TRACE_FIELDS[name]
            want = tuple(self.dims[d] for d in spec.dims)
            arrays[name] = arr = np.asarray(data[name], dtype=object if spec.dtype == "str" else spec.dtype)
            if arr.shape != want:
                raise ValueError(f"field '{name}': shape {arr.shape}, expected {want} ({' x '.join(spec.dims)})")
        hashes, self._hashes = self._hashes, None  # a write that fails half-way leaves them unusable
        for name, arr in arrays.items():
            ds = self.f[name]
            if ds.shape[0] != t + 1:
                ds.resize(t + 1, axis=0)
            ds[t] = arr
        self.f.flush()  # data first, then the tick count: a crash never counts a half-written tick
        if run_state is not None:
            self.f.attrs["run_state"] = json.dumps(run_state)
        self.f.attrs["ticks_complete"] = t + 1
        self.f.flush()
        if hashes is not None:  # the tick is counted: its values join the running hashes
            for name, arr in arrays.items():
                hashes[name].update(arr)
            self._hashes = hashes
        return t

    def close(self, complete: bool = True, summary: dict[str, Any] | None = None) -> None:
        if summary is not None:
            self.f.attrs["summary"] = json.dumps(summary)
        if complete:
            hashes = self._hashes or {}
            write_checksums(self.f, {name: _digest_of(self.f[name].name, self.f[name].dtype, self.f[name].shape, h)
                                     for name, h in hashes.items()})
        self.f.attrs["complete"] = bool(complete)
        self.f.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self.f.id.valid:
            self.close(complete=exc_type is None)


# --------------------------------------------------------------------------- trace reader
class TraceFile:
    """Read a teacher trace or student rollout.

    `TraceFile(path)` checks version and kind; an incomplete file (fewer ticks than planned,
    `complete` false) raises unless `allow_partial=True`. `tensors()` gives torch tensors
    [T, N, ...]; `to_dataset()` a `datasets.Dataset` of per-agent-tick records.
    """

    def __init__(self, path: str | Path, allow_partial: bool = False):
        self.path = Path(path)
        self.f = open_h5(self.path)
        try:
            self.kind = check_header(self.f, ["teacher_trace", "student_rollout"])
            self.fields: list[str] = json.loads(self.f.attrs["fields"])
            self.dims: dict[str, int] = json.loads(self.f.attrs["dims"])
            for name in self.fields:
                _require(self.f, name, TRACE_FIELDS[name].doc if name in TRACE_FIELDS else name)
            self.n_ticks = int(self.f.attrs["ticks_complete"])
            complete = bool(self.f.attrs.get("complete", False))
            if not complete and not allow_partial:
                planned = self.f.attrs.get("ticks_planned")
                of = f" of {int(planned)}" if planned is not None else ""
                raise StoreError(
                    f"{self.path}: incomplete {self.kind}: {self.n_ticks}{of} ticks written and the run did not finish; "
                    "re-run the same command to resume it (or open with allow_partial=True)"
                )
        except Exception:
            self.f.close()
            raise

    @property
    def n_agents(self) -> int:
        return int(self.dims["N"])

    @property
    def configs(self) -> dict[str, Any]:
        return read_configs(self.f)

    @property
    def seeds(self) -> dict[str, int]:
        return json.loads(self.f.attrs.get("seeds", "{}"))

    @property
    def scenario(self):


        source = f"{self.path}:scenario"
        return scenario_from_dict(parse_document(str(self.f["scenario"].attrs["yaml"]), source, "scenario"), source=source)

    def world(self):
        """(Population, SocialGraph) stored in the file."""
        return read_world_groups(self.f)

    def events(self) -> list[dict[str, Any]]:
        ev = self.f["events"]
        lacking = [c for c in EVENT_COLUMNS if c not in ev and c not in EVENT_FEATURE_DEFAULTS]
        if lacking:
            raise StoreError(f"{self.path}: its events/ table has no column {', '.join(lacking)} (this lsm stores "
                             f"{', '.join(EVENT_COLUMNS)}): it was written by a version of lsm with other event "
                             "features; regenerate it with this one")
        n = ev["uid"].shape[0]  # a feature declared after the file was written: its default
        cols = {c: ev[c][()] if c in ev else np.full(n, EVENT_FEATURE_DEFAULTS[c], np.float32) for c in EVENT_COLUMNS}
        out = []
        for i in range(len(cols["uid"])):
            row = {c: (v[i].decode() if isinstance(v[i], bytes) else v[i].item() if hasattr(v[i], "item") else v[i]) for c, v in cols.items()}
            out.append(row)
        return out

    def array(self, name: str, ticks: slice | None = None) -> np.ndarray:
        if name not in self.fields:
            raise StoreError(f"{self.path}: has no field '{name}' (fields: {', '.join(self.fields)})")
        ds = self.f[name]
        sl = ticks or slice(0, self.n_ticks)
        out = ds[sl]
        if TRACE_FIELDS[name].dtype == "str":
            out = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else s, otypes=[object])(out) if out.size else out
        return out

    def tensors(self, fields: Sequence[str] | None = None, ticks: slice | None = None) -> dict[str, Any]:
        """Numeric fields as torch tensors [T, N, ...] (float16 stays float16; bools are bool)."""
        import torch

        names = [f for f in (fields or self.fields) if TRACE_FIELDS[f].dtype != "str"]
        return {name: torch.from_numpy(np.ascontiguousarray(self.array(name, ticks))) for name in names}

    def to_dataset(self, ticks: slice | None = None, with_identity: bool = True, with_text: bool = True):
        """A `datasets.Dataset` with one record per agent-tick.

        Columns: tick, agent, valid, decision (label), decision_index, stance, salience, one
        column per channel, decision_value (numeric actions), texts (if stored and
        `with_text`), and identity attributes (if `with_identity`).
        """
        import datasets

        sc = self.scenario
        t_sl = ticks or slice(0, self.n_ticks)
        t_idx = np.arange(self.n_ticks)[t_sl]
        n = self.n_agents
        cols: dict[str, Any] = {
            "tick": np.repeat(t_idx, n).astype(np.int32),
            "agent": np.tile(np.arange(n), len(t_idx)).astype(np.int32),
        }
        decision = self.array("decision", t_sl).reshape(-1)
        labels = np.asarray(sc.actions.labels + [None], dtype=object)
        cols["valid"] = self.array("valid", t_sl).reshape(-1)
        cols["decision"] = labels[np.where(decision >= 0, decision, len(labels) - 1)].tolist()
        cols["decision_index"] = decision.astype(np.int32)
        if "decision_value" in self.fields:
            cols["decision_value"] = self.array("decision_value", t_sl).reshape(-1)
        for k in ("stance", "salience"):
            cols[k] = self.array(k, t_sl).reshape(-1)
        ch = self.array("channels", t_sl).reshape(-1, self.dims["C"])
        for c, name in enumerate(sc.channel_names):
            cols[name] = ch[:, c]
        if with_text:
            for k in ("reasoning", "expression", "salient_memory", "error"):
                if k in self.fields:
                    cols[k] = self.array(k, t_sl).reshape(-1).tolist()
        if with_identity:
            pop, _ = self.world()
            for a in pop.categorical:
                cols[a] = np.tile(pop.labels(a), len(t_idx)).tolist()
            for a, v in pop.numeric.items():
                cols[a] = np.tile(v, len(t_idx))
        return datasets.Dataset.from_dict(cols)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "TraceFile":
        return self

    def __exit__(self, *_) -> None:
        self.close()

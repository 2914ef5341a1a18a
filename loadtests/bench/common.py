"""What every benchmark shares: the machine, percentiles, the FLOPs floor, the result file.

A benchmark is a script that prints a table and writes one JSON result; it asserts nothing.
Every result records the machine (CPU model, ISA flags that matter for the kernels, cores,
load average before and after, torch version and threads), so that a figure can always be
read against the machine that produced it, and every ratio in it is measured within one run.

Result files live in ``docs/benchmarks/results/<name>.json`` by default; the renderer
(``python -m loadtests.reports.render``) draws the Markdown pages from them, so no figure
is ever typed into a page by hand.

Result schema (``SCHEMA_VERSION`` 1)::

    {
      "schema": 1,
      "benchmark": "ranker",                 # the name; also the page name
      "title": "Online ranker",              # the page heading
      "command": "python -m ...",            # the exact command that reproduces it
      "started_at": "2026-12-01T21:40:00Z",
      "seconds": 123.4,                      # wall time of the whole run
      "machine": {...},                      # machine_info() at the start
      "load_after": [1.2, 0.9, 0.7],         # the load average when it finished
      "description": "markdown paragraph",   # what is measured and how (optional)
      "tables": [{"title": str, "columns": [str], "rows": [[value]], "note": str}],
      "summary": ["non-model share: 8.1%", ...],  # the headline lines, printed last
      "data": {...}                          # anything else, machine-readable (optional)
    }
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "docs" / "benchmarks" / "results"

# The ISA extensions that decide which kernels torch can use on x86 (and their absence).
_INTERESTING_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_tile",
)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_family_model(cpuinfo: str | None = None) -> str | None:
    """ "family F, model M" of the first processor in /proc/cpuinfo (x86; None elsewhere): what
    tells CPU generations apart where the model name does not (a VM's "AMD EPYC" is a Zen 3,
    4 or 5)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():  # the end of the first processor's block
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']}, model {fields['model']}"


def cpu_flags() -> list[str]:
    """The interesting ISA flags this CPU reports, in a fixed order."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in _INTERESTING_FLAGS if f in have]
    return []


# The environment that caps the instruction set of every CPU kernel library torch uses
# (ATen's vectorised ops, oneDNN, MKL and FBGEMM): an AVX2-only CPU's kernels, measured on a
# CPU with more. Each library reads its variable once, when torch loads.
ISA_CAPS: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    },
}


def isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``ISA_CAPS`` entry this environment sets in full, or None."""
    env = os.environ if environ is None else environ
    for name, caps in ISA_CAPS.items():
        if all(env.get(k) == v for k, v in caps.items()):
            return name
    return None


def cap_isa(isa: str | None, module: str, argv: Sequence[str]) -> None:
    """Re-run ``python -m module argv`` in this process with the instruction set capped at
    ``isa`` (an ``ISA_CAPS`` key), unless it already is or ``isa`` is None; the libraries
    read the caps only when torch loads, so the benchmark must start again under them."""
    if isa is None or isa_cap() == isa:
        return
    if isa not in ISA_CAPS:
        raise ValueError(f"unknown ISA cap {isa!r}: one of {sorted(ISA_CAPS)}")
    env = {**os.environ, **ISA_CAPS[isa]}
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """The machine, as every result records it. Imports torch only if it is installed."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_family_model": cpu_family_model(),
        "flags": cpu_flags(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cores_total": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()}",
    }
    try:
        import torch
    except ImportError:
        info["torch"] = None
    else:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["isa_cap"] = isa_cap()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: Mapping[str, Any] | None = None) -> str:
    """One printable line: CPU, flags, cores, load, torch."""
    m = dict(info or machine_info())
    flags = ",".join(m.get("flags") or []) or "none of " + "/".join(_INTERESTING_FLAGS[:3])
    load = "/".join(f"{x:.2f}" for x in m.get("load_average") or [])
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    generation = f" ({m['cpu_family_model']})" if m.get("cpu_family_model") else ""
    capped = (
        f", kernels capped at {m['isa_cap'].upper()} (torch's: "
        f"{m.get('torch_cpu_capability', '?')})"
        if m.get("isa_cap")
        else ""
    )
    return (
        f"{m.get('cpu')}{generation} [{flags}]{capped}, {m.get('cores_usable')} cores usable, "
        f"load {load or '?'}, "
        f"torch {m.get('torch')} ({m.get('torch_threads', '?')} threads){gpu}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


def matmul_rate(device: str = "cpu", dtype: str = "float32", n: int = 1024, seconds: float = 1.0):
    """Sustained FLOP/s of an n x n x n matmul at the current torch thread count: the floor
    against which model steps are compared, measured in the same run."""
    import torch

    dev = torch.device(device)
    dt_ = getattr(torch, dtype)
    a = torch.randn(n, n, device=dev, dtype=dt_)
    b = torch.randn(n, n, device=dev, dtype=dt_)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def parallel_matmul_scaling(threads: int = 2, n: int = 512, seconds: float = 1.0) -> float:
    """Throughput of fp32 matmuls from ``threads`` Python threads at once (one intra-op thread
    each) over that of one thread: ~``threads`` on as many free cores, ~1 where the vCPUs share
    one core's vector units (or the host is oversubscribed)."""
    import threading

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)

    def rate(k: int) -> float:
        counts = [0] * k
        stop = time.perf_counter() + seconds

        def work(i: int) -> None:
            torch.set_num_threads(1)
            while time.perf_counter() < stop:
                a @ b
                counts[i] += 1

        workers = [threading.Thread(target=work, args=(i,)) for i in range(k)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(counts) / seconds

    rate(1)  # warm-up
    return rate(threads) / rate(1)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def add(self, *row: Any) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"{self.title}: row has {len(row)} cells, table has {self.columns}")
        self.rows.append(list(row))

    def markdown(self) -> str:
        return markdown_table(self.columns, self.rows)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 0.01 else f"{v:.2f}"
    return "-" if v is None else str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; a '|' inside a header or cell (e.g. "|diff|") is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(columns), "|" + "---|" * len(columns)]
    lines += [line([_cell(v) for v in row]) for row in rows]
    return "\n".join(lines)


@dataclass
class Result:
    """One benchmark run; ``write()`` prints its tables and summary and saves the JSON."""

    benchmark: str
    title: str
    command: str
    description: str = ""
    tables: list[Table] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)
    started_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def table(self, title: str, columns: Sequence[str], note: str = "") -> Table:
        t = Table(title, list(columns), note=note)
        self.tables.append(t)
        return t

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "benchmark": self.benchmark,
            "title": self.title,
            "command": self.command,
            "started_at": self.started_at,
            "seconds": round(time.perf_counter() - self._t0, 1),
            "machine": self.machine,
            "load_after": load_average(),
            "description": self.description,
            "tables": [
                {"title": t.title, "columns": t.columns, "rows": t.rows, "note": t.note}
                for t in self.tables
            ],
            "summary": list(self.summary),
            "data": self.data,
        }

    def write(self, out: Path | None = None) -> Path:
        """Print the tables and the summary lines, then write the JSON (default
        ``docs/benchmarks/results/<benchmark>.json``); returns the path written."""
        print(f"# {self.title}\n\nmachine: {machine_line(self.machine)}\ncommand: {self.command}")
        for t in self.tables:
            print(f"\n## {t.title}\n\n{t.markdown()}")
            if t.note:
                print(f"\n{t.note}")
        if self.summary:
            print()
            for line in self.summary:
                print(line)
        path = out or RESULTS_DIR / f"{self.benchmark}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, default=_json_default) + "\n")
        print(f"\nwrote {path}")
        return path


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_result(path: Path) -> dict[str, Any]:
    """A result file, checked against the schema version."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA_VERSION}")
    for key in ("benchmark", "title", "command", "machine", "tables", "summary"):
        if key not in doc:
            raise ValueError(f"{path}: missing {key!r}")
    return doc


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The reproducing command for ``python -m module`` with these arguments."""
    import shlex

    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in (argv or []))])

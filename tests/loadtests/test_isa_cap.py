"""--isa avx2: a benchmark re-runs itself with torch's CPU kernels capped at AVX2, and its
result says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadtests.bench import common
from loadtests.bench.common import ISA_CAPS, cap_isa, isa_cap, machine_line

MACHINE = {"cpu": "Test CPU", "flags": ["avx2", "avx512f"], "cores_usable": 2,
           "load_average": [0.1], "torch": "2.13.0", "torch_threads": 1}  # fmt: skip


def test_the_cap_is_read_from_the_environment_only_when_complete() -> None:
    caps = ISA_CAPS["avx2"]
    assert isa_cap(caps) == "avx2"
    assert isa_cap({**caps, "PATH": "/bin"}) == "avx2"
    partial = dict(caps)
    partial.pop("FBGEMM_ENABLE_INSTRUCTIONS")
    assert isa_cap(partial) is None  # one library left uncapped is no cap
    assert isa_cap({}) is None


def test_cap_isa_restarts_the_module_under_the_cap_once(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(common.os, "execve", lambda *a: calls.append(a))
    for k in ISA_CAPS["avx2"]:
        monkeypatch.delenv(k, raising=False)
    cap_isa(None, "loadtests.bench.scoring", ["--tag", "x"])
    assert calls == []
    cap_isa("avx2", "loadtests.bench.scoring", ["--isa", "avx2"])
    ((exe, args, env),) = calls
    assert exe == sys.executable
    assert args == [sys.executable, "-m", "loadtests.bench.scoring", "--isa", "avx2"]
    assert isa_cap(env) == "avx2" and env["PATH"] == os.environ["PATH"]
    for k, v in ISA_CAPS["avx2"].items():
        monkeypatch.setenv(k, v)
    cap_isa("avx2", "loadtests.bench.scoring", ["--isa", "avx2"])  # already capped
    assert len(calls) == 1
    with pytest.raises(ValueError, match="unknown ISA cap"):
        for k in ISA_CAPS["avx2"]:
            monkeypatch.delenv(k)
        cap_isa("sse2", "loadtests.bench.scoring", [])


def test_the_machine_line_names_the_cap() -> None:
    capped = {**MACHINE, "isa_cap": "avx2", "torch_cpu_capability": "AVX2"}
    assert "[avx2,avx512f], kernels capped at AVX2 (torch's: AVX2), 2 cores" in machine_line(capped)
    assert "capped" not in machine_line({**MACHINE, "isa_cap": None})


def test_torch_takes_the_cap_and_the_machine_records_it() -> None:
    pytest.importorskip("torch")
    if "avx2" not in common.cpu_flags():
        pytest.skip("the cap lowers torch's kernels to AVX2: this CPU has less")
    code = "import json; from loadtests.bench.common import machine_info; " + (
        "m = machine_info(); print(json.dumps([m['isa_cap'], m['torch_cpu_capability']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **ISA_CAPS["avx2"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == ["avx2", "AVX2"]

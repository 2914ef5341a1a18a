"""retain_freed_memory: a repeated large allocation stops page-faulting once it is applied."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared_model.process import MAX_MMAP_THRESHOLD_MB, retain_freed_memory

# A model step's pattern: several 1 MiB activations alive at once, all freed at the end; 50
# steps. Prints whether the setting applied and the minor page faults the steps cost.
_PROBE = """
import resource, sys, torch
from shared_model.process import retain_freed_memory
applied = retain_freed_memory(int(sys.argv[1]))
def step():
    xs = [torch.ones(1 << 18) for _ in range(8)]  # written, then all freed
    return sum(float(x.sum()) for x in xs)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(threshold_mb: int) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(threshold_mb)], capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults() -> None:
    applied_off, faults_off = _faults(0)
    applied_on, faults_on = _faults(MAX_MMAP_THRESHOLD_MB)
    assert not applied_off and applied_on
    # Off: glibc returns the freed 8 MiB to the kernel after each step (top-of-heap trim), and
    # the next step faults its ~2,000 pages in again.
    assert faults_off > 50 * 1000
    assert faults_on < faults_off / 20


def test_threshold_above_glibcs_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 32"):
        retain_freed_memory(MAX_MMAP_THRESHOLD_MB + 1)

"""Which autocast dtype a service's ``autocast`` setting resolves to, on which hardware."""

from __future__ import annotations

import pytest
import torch

from shared_model import inference
from shared_model.inference import cpu_has_native_bf16, resolve_autocast

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(ZEN3, False), (ZEN4, True), (SAPPHIRE_RAPIDS, True), ("", False),
     ("flags\t: avx512bf16x\n", False)],
    ids=["avx2-only", "avx512-bf16", "amx-bf16", "no-flags-line", "lookalike-flag"],
)  # fmt: skip
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert cpu_has_native_bf16(cpuinfo) is native


@pytest.mark.parametrize("native", [False, True])
def test_auto_is_bf16_on_cuda_and_on_native_bf16_cpus_only(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_autocast("auto", cpu) == (torch.bfloat16 if native else None)
    assert resolve_autocast("auto", cuda) == torch.bfloat16
    assert resolve_autocast("bf16", cpu) == torch.bfloat16
    assert resolve_autocast("none", cpu) is None
    assert resolve_autocast("none", cuda) is None


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="autocast must be"):
        resolve_autocast("fp16", torch.device("cpu"))

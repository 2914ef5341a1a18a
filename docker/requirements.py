"""Print pip requirements from pyproject.toml, one per line (run in the image builds).

    python requirements.py                          # [project].dependencies
    python requirements.py --extra loadtest --without torch --without safetensors
    python requirements.py --only torch --local cpu  # torch==2.13.0+cpu

``--local`` adds a local version label to ``==`` pins, so a CPU image asks for the ``+cpu``
build by name and pip can never fall back to another build of the same version. Standard
library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def name_of(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``uvicorn[standard]==1`` ->
    ``uvicorn``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(
    pyproject: dict,
    extras: list[str] = (),
    without: list[str] = (),
    only: list[str] = (),
    local: str | None = None,
) -> list[str]:
    project = pyproject["project"]
    out = list(project["dependencies"])
    for extra in extras:
        try:
            out += project["optional-dependencies"][extra]
        except KeyError:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}") from None
    skip = {name_of(n) for n in without}
    keep = {name_of(n) for n in only}
    out = [r for r in out if name_of(r) not in skip and (not keep or name_of(r) in keep)]
    if keep - {name_of(r) for r in out}:
        raise SystemExit(f"not in pyproject.toml: {sorted(keep - {name_of(r) for r in out})}")
    if local:
        out = [re.sub(r"==\s*([^\s;,+]+)(?=\s*(;|$))", rf"==\1+{local}", r) for r in out]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    p.add_argument("--extra", action="append", default=[], help="an optional-dependencies group")
    p.add_argument("--without", action="append", default=[], help="leave this package out")
    p.add_argument("--only", action="append", default=[], help="print only this package")
    p.add_argument("--local", help="local version label added to == pins (cpu, cu128)")
    args = p.parse_args(argv)
    doc = tomllib.loads(args.pyproject.read_text())
    sys.stdout.write(
        "".join(
            f"{r}\n" for r in requirements(doc, args.extra, args.without, args.only, args.local)
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

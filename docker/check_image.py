"""Checks run at the end of an image build: the build fails when the image cannot work.

    python check_image.py --torch cuda --import upstream_service.worker
    python check_image.py --torch cpu --import ranker_service.main --import uvloop
    python check_image.py --torch absent --import upstream_service.produce

``--torch cuda``: the CUDA runtime torch was built for must not be newer than the base image's
(``CUDA_VERSION``, set by the nvidia/cuda images). The base image's ``NVIDIA_REQUIRE_CUDA``
makes the container toolkit refuse a host driver older than the base's CUDA with a clear error;
a torch built for a newer CUDA than the base would start on such a driver and find no usable
GPU, and the worker would restart in a loop. ``--torch cpu``: the ``+cpu`` build, no CUDA.
``--torch absent``: torch is not installed and importing the given modules does not need it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def torch_problems(
    kind: str, torch_version: str | None, torch_cuda: str | None, base_cuda: str | None
) -> list[str]:
    """What is wrong with the installed torch for an image of this kind (empty: nothing)."""
    if kind == "absent":
        return [] if torch_version is None else [f"torch {torch_version} is installed"]
    if torch_version is None:
        return ["torch is not installed"]
    if kind == "cpu":
        if torch_cuda is not None or not torch_version.endswith("+cpu"):
            return [f"torch {torch_version} (CUDA {torch_cuda}) is not the +cpu build"]
        return []
    if torch_cuda is None:
        return [f"torch {torch_version} is a CPU build in a CUDA image"]
    if base_cuda is None:
        return ["CUDA_VERSION is not set: the base image is not an nvidia/cuda image"]
    if _major_minor(torch_cuda) > _major_minor(base_cuda):
        return [
            f"torch {torch_version} is built for CUDA {torch_cuda}, newer than the base "
            f"image's CUDA {base_cuda}: hosts whose driver supports only CUDA {base_cuda} would "
            "start the container and find no usable GPU. Use a base image with CUDA "
            f">= {torch_cuda} or the torch build for CUDA {base_cuda}."
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch", choices=("cuda", "cpu", "absent"), required=True)
    p.add_argument("--import", dest="modules", action="append", default=[])
    args = p.parse_args(argv)
    problems: list[str] = []
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            problems.append(f"import {module}: {e}")
    if args.torch == "absent":
        version = None if importlib.util.find_spec("torch") is None else "(found)"
        problems += torch_problems("absent", version, None, None)
        if "torch" in sys.modules:
            problems.append(f"importing {args.modules} loads torch")
    else:
        try:
            import torch
        except ImportError:
            problems.append("torch is not installed")
        else:
            base = os.environ.get("CUDA_VERSION")
            problems += torch_problems(args.torch, torch.__version__, torch.version.cuda, base)
    for problem in problems:
        print(f"check_image: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_image: ok (torch {args.torch}, imports {args.modules})")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

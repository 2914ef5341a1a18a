"""``python -m ranker_service [--host H] [--port P]``: the ranker under uvicorn.

The same server every deployment runs (Makefile, local stack, Dockerfile, compose): uvloop for
the event loop and httptools for HTTP parsing (``uvicorn --loop uvloop --http httptools``),
one process, no access log. Everything else is ``RANKER_*`` settings.
"""

from __future__ import annotations

import argparse

import uvicorn

# The uvicorn options of every ranker start; the launchers that spawn the uvicorn CLI pass
# the same flags (``UVICORN_FLAGS``).
UVICORN_OPTIONS = {"loop": "uvloop", "http": "httptools", "access_log": False}
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ranker_service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(
        "ranker_service.main:app",
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()

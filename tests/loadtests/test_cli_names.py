"""One spelling per CLI flag across commands; the old spellings still parse, hidden."""

from __future__ import annotations

import argparse
import contextlib
import io
from unittest import mock

import pytest

from loadtests.locust import run
from upstream_service import produce


def _parsed(main, argv: list[str]) -> argparse.Namespace:
    """The namespace main() parsed argv into (main stops right after parsing)."""
    seen = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        seen["ns"] = original(self, args, namespace)
        raise SystemExit(0)

    patched = mock.patch.object(argparse.ArgumentParser, "parse_args", capture)
    with patched, contextlib.suppress(SystemExit):
        main(argv)
    return seen["ns"]


def _loadtest(argv: list[str]) -> argparse.Namespace:
    return run.build_parser().parse_known_args(argv)[0]


@pytest.mark.parametrize(
    ("parse", "new", "old", "dest"),
    [
        (lambda argv: _parsed(produce.main, argv), "--kafka", "--brokers", "kafka"),
        (_loadtest, "--kafka", "--kafka-bootstrap", "kafka_bootstrap"),
    ],
    ids=["produce", "loadtest"],
)
def test_old_and_new_flag_spellings_agree(parse, new: str, old: str, dest: str) -> None:
    assert getattr(parse([new, "h:1"]), dest) == "h:1"
    assert getattr(parse([old, "h:1"]), dest) == "h:1"


def test_old_spellings_are_hidden_from_help() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        produce.main(["--help"])
    assert "--kafka" in out.getvalue() and "--brokers" not in out.getvalue()


def test_model_benchmark_flags() -> None:
    from loadtests.bench import model

    ns = _parsed(model.main, ["--upstream-T", "64", "--out", "x.json"])
    assert ns.history_length == "64" and str(ns.out) == "x.json"
    assert _parsed(model.main, []).history_length == "1000"

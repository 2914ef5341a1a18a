"""Mutation testing (``python -m tests.mutation.run``, ``make mutation``)."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    """A hypothesis test's example count: a tenth of it under mutation testing, where the test
    runs once per mutant (the full count in the ordinary suite)."""
    return max(10, n // 10) if os.environ.get("LLATTE_MUTATION") else n


if os.environ.get("LLATTE_MUTATION"):
    from hypothesis import HealthCheck, settings

    # Few examples per mutant: filtering health checks would fail the unmutated code.
    settings.register_profile("mutation", suppress_health_check=list(HealthCheck))
    settings.load_profile("mutation")

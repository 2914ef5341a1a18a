"""docs/operations.md: its configuration reference is the one generated from the Settings."""

from __future__ import annotations

from loadtests.reports.config_reference import DOC, SERVICES, current_block, env_vars, reference


def test_reference_is_up_to_date() -> None:
    block = current_block(DOC.read_text())
    assert block is not None, f"{DOC} lost its config-reference markers"
    assert block == reference(), (
        f"{DOC} is stale: run `python -m loadtests.reports.config_reference` (or `make docs`)"
    )


def test_every_variable_has_a_default_and_a_meaning() -> None:
    rows = {line.split("`")[1]: line for line in reference().splitlines() if line.startswith("| `")}
    for _, cls in SERVICES:
        for env in env_vars(cls):
            assert env in rows, env
            meaning = rows[env].rstrip(" |").rsplit("|", 1)[-1].strip()
            assert meaning, f"{env} has no meaning: comment its field or add it to EXTRA_MEANINGS"

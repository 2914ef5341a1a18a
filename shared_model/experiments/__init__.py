"""Paper experiments (matplotlib allowed here): python -m shared_model.experiments --help."""

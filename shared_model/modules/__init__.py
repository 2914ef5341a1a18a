"""LLaTTE building blocks, one component per file."""

"""Training and evaluation of the two stages (numpy and tqdm allowed here, not in the model)."""

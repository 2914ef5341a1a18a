"""Data for training and demos: the synthetic world, MovieLens, and training-sample builders.

numpy is used here (never in the model code); MovieLens content vectors need the optional
``movielens`` extra, imported lazily.
"""

from shared_model.data.synthetic import SyntheticWorld, UserState, WorldConfig

__all__ = ["SyntheticWorld", "UserState", "WorldConfig"]

"""Write a small, seeded MovieLens-format folder (ratings, movies, tags, links CSVs).

For tests and smoke runs of ``--data-dir``: users have a favourite genre and rate movies of it
higher and more often, and a few movies are far more popular than the rest, so both the
popularity baseline and a model have something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
FIRST_TS = 1_100_000_000  # seconds, 2004


def write_tiny_movielens(
    folder: str | Path,
    n_users: int = 40,
    n_movies: int = 120,
    ratings_per_user: int = 40,
    n_tags: int = 0,
    seed: int = 0,
) -> Path:
    """Write ``ratings.csv``, ``movies.csv``, ``tags.csv`` (header only when ``n_tags`` is 0)
    and ``links.csv`` into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, len(GENRES), n_movies)
    second = rng.integers(0, len(GENRES), n_movies)
    movie_ids = np.sort(rng.choice(np.arange(1, 10 * n_movies), n_movies, replace=False))
    with open(folder / "movies.csv", "w") as f:
        f.write("movieId,title,genres\n")
        for i, m in enumerate(movie_ids):
            gs = sorted({GENRES[genre[i]], GENRES[second[i]]})
            f.write(f'{m},"Movie {m}, The ({1980 + i % 40})",{"|".join(gs)}\n')
    with open(folder / "links.csv", "w") as f:
        f.write("movieId,imdbId,tmdbId\n")
        f.writelines(f"{m},{100000 + m},{m}\n" for m in movie_ids)
    popularity = rng.zipf(1.6, n_movies).astype(float).clip(max=50)
    rows = []
    for u in range(1, n_users + 1):
        fav = rng.integers(0, len(GENRES))
        weight = popularity * np.where(genre == fav, 4.0, 1.0)
        n = min(ratings_per_user, n_movies)
        seen = rng.choice(n_movies, n, replace=False, p=weight / weight.sum())
        start = FIRST_TS + int(rng.integers(0, 200 * 86_400))
        times = start + np.sort(rng.integers(0, 300 * 86_400, n))
        for i, t in zip(seen, times, strict=True):
            base = 4.0 if genre[i] == fav else 2.5
            r = float(np.clip(np.round(2 * (base + rng.normal(0, 0.8))) / 2, 0.5, 5.0))
            rows.append((u, int(movie_ids[i]), r, int(t)))
    with open(folder / "ratings.csv", "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        f.writelines(f"{u},{m},{r},{t}\n" for u, m, r, t in rows)
    with open(folder / "tags.csv", "w") as f:
        f.write("userId,movieId,tag,timestamp\n")
        for k in range(n_tags):
            u, m, _, t = rows[int(rng.integers(0, len(rows)))]
            f.write(f"{u},{m},tag{k % 7},{t + 60}\n")
    return folder

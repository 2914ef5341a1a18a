import math
from collections import Counter
from itertools import islice

import numpy as np

from shared_model.contract import ActionType, UserEvent
from shared_model.data.synthetic import (
    DEFAULT_START_MS,
    MS_PER_DAY,
    MS_PER_HOUR,
    SyntheticWorld,
    UserState,
    WorldConfig,
)


def _world(seed=0, **kw):
    return SyntheticWorld(WorldConfig(seed=seed, n_users=20, n_items=300, n_ads=40, **kw))


def test_deterministic_for_a_seed_and_prefix_stable():
    a = list(_world().stream_events(DEFAULT_START_MS, MS_PER_DAY))
    b = list(_world().stream_events(DEFAULT_START_MS, MS_PER_DAY))
    c = list(_world(seed=1).stream_events(DEFAULT_START_MS, MS_PER_DAY))
    assert a == b and len(a) > 100
    assert a != c
    longer = list(islice(_world().stream_events(DEFAULT_START_MS, 3 * MS_PER_DAY), len(a)))
    assert longer == a


def test_stream_is_time_ordered_valid_contract_events():
    events = list(_world().stream_events(DEFAULT_START_MS, 2 * MS_PER_DAY))
    ts = [e.timestamp_ms for e in events]
    assert ts == sorted(ts)
    assert all(DEFAULT_START_MS <= t < DEFAULT_START_MS + 2 * MS_PER_DAY for t in ts)
    for e in events[:50]:
        assert UserEvent.decode(e.encode()) == e
        assert len(e.content_embedding) == WorldConfig().content_dim
    kinds = Counter(e.action_type for e in events)
    # high-frequency low-signal events dominate; conversions are the rarest
    assert kinds[ActionType.VIEW] > kinds[ActionType.CLICK] > kinds[ActionType.CONVERSION] > 0
    assert kinds[ActionType.IMPRESSION] > kinds[ActionType.CONVERSION]


def test_activity_has_daily_periodicity():
    w = _world()
    hours = [
        (e.timestamp_ms % MS_PER_DAY) // MS_PER_HOUR
        for e in w.stream_raw(DEFAULT_START_MS, 4 * MS_PER_DAY)
    ]
    counts = np.bincount(hours, minlength=24)
    assert counts.max() > 4 * max(counts.min(), 1)


def test_label_probs_follow_the_stated_model():
    w = _world()
    c = w.cfg
    state = UserState(np.zeros(c.latent_dim))
    state.engage(w.ad_latent[3], 2.0)
    state.memory[int(w.ad_brand[3])] = 2
    state.last_ms = DEFAULT_START_MS
    t = DEFAULT_START_MS
    p_click, p_conv = w.impression_label_probs(5, 3, t, state)
    z = w.ad_latent[3]
    s_long = w.long_interest(5, t) @ z
    s_int = (2.0 * z / 3.0) @ z
    s_mem = math.log1p(2)
    q = w.ad_quality[3]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want_click = sig(
        c.ctr_bias + c.w_long * s_long + c.w_intent * s_int + c.w_memory * s_mem + c.w_quality * q
    )
    want_cvr = sig(c.cvr_bias + c.v_long * s_long + c.v_memory * s_mem + c.v_quality * q)
    assert math.isclose(p_click, want_click, rel_tol=1e-9)
    assert math.isclose(p_conv, want_click * want_cvr, rel_tol=1e-9)
    # sampled labels match the probabilities (4 sigma)
    rng = np.random.default_rng(0)
    n = 20_000
    draws = np.array([w.sample_impression_labels(5, 3, t, state, rng) for _ in range(n)])
    for k, p in enumerate((p_click, p_conv)):
        assert abs(draws[:, k].mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert np.all(draws[:, 1] <= draws[:, 0])  # a conversion needs a click


def test_stream_labels_are_calibrated_to_the_stated_probabilities():
    w = _world()
    p, clicked = {}, set()
    for e in w.stream_events(DEFAULT_START_MS, 6 * MS_PER_DAY):
        if e.action_type == ActionType.IMPRESSION:
            p[e.event_id] = float(e.metadata["p_click"])
        elif e.action_type == ActionType.CLICK and "impression_id" in e.metadata:
            clicked.add(e.metadata["impression_id"])
    probs = np.array(list(p.values()))
    labels = np.array([k in clicked for k in p])
    se = math.sqrt((probs * (1 - probs)).sum()) / len(probs)
    assert abs(labels.mean() - probs.mean()) < 4 * se
    # higher predicted probability -> higher realised rate
    hi = probs > np.median(probs)
    assert labels[hi].mean() > labels[~hi].mean()

"""A seeded, streaming synthetic world of users, items and ads with a known label model.

Latent structure (all latents are unit vectors in R^k, k = ``latent_dim``):

* brands g_b; an item or ad of brand b has latent z = normalise(0.8 g_b + 0.6 eps). Its content
  embedding is a noisy linear view of z (``content = W z + content_noise * eps``, then float16),
  so content generalises to rare items whose id embeddings never trained.
* user u has a long-term interest that drifts slowly: l_u(t) = cos(theta) a_u + sin(theta) b_u,
  theta = phi_u + 2 pi t / drift_period (a_u orthogonal to b_u);
* a short-term intent i_u(t): an exponentially decayed mean (half-life ``intent_half_life_h``)
  of the latents of the items and ads the user engaged with;
* a long-range conversion memory m_u[b]: how many times the user ever converted on brand b.

Activity: each user has sessions at a per-user peak hour (daily periodicity), each a run of
high-frequency low-signal events (item views, ad impressions) with rare clicks and rarer
conversions (the high-value events).

**The label model** for an ad impression (user u, ad a, time t), ``impression_label_probs``:

    s_long   = l_u(t) . z_a                       (long-term interest: many events reveal it)
    s_intent = i_u(t) . z_a                       (recent events)
    s_mem    = log1p(m_u[brand(a)])               (conversions at any age: long history)
    logit P(click)             = ctr_bias + w_long s_long + w_intent s_intent
                                 + w_memory s_mem + w_quality q_a
    logit P(conversion | click) = cvr_bias + v_long s_long + v_memory s_mem + v_quality q_a
    P(conversion) = P(click) P(conversion | click)

The state (intent, memory) is the one *before* the impression; the click and conversion it
causes are then drawn and appended to the stream, so they update the state for later events.

Every event of user u is drawn from a generator seeded by (seed, u), one day at a time, and the
users' streams are merged by time: output is deterministic for (config, start_ms), a prefix of
a longer window equals the shorter window, and memory stays O(users x events per day).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from shared_model.contract import ActionType, UserEvent

MS_PER_SECOND = 1_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
DEFAULT_START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


@dataclass
class WorldConfig:
    seed: int = 0
    n_users: int = 1_000
    n_items: int = 5_000
    n_ads: int = 500
    n_brands: int = 50  # advertisers; every item and ad belongs to one
    # k is small and the content view clean enough that the content match is learnable from
    # tens of thousands of impressions (a 32x32 bilinear form from weak labels is not).
    latent_dim: int = 6  # k
    content_dim: int = 16  # width of the content embedding carried by events and ads
    content_noise: float = 0.3  # std of the noise added to the content view of the latent
    ad_float_dim: int = 4  # candidate float features per ad
    # --- activity -----------------------------------------------------------------------------
    sessions_per_day: float = 4.0  # mean, scaled per user by a log-normal activity level
    events_per_session: float = 12.0  # mean of a geometric number of slots
    ad_slot_rate: float = 0.3  # fraction of slots that show an ad (the rest show an item)
    session_hour_std: float = 3.0  # spread of session starts around the user's peak hour
    item_pool: int = 32  # items considered per view (popularity-sampled), chosen by affinity
    choice_temperature: float = 0.25
    # --- user dynamics ------------------------------------------------------------------------
    drift_period_days: float = 90.0  # one full turn of the long-term interest
    intent_half_life_h: float = 3.0
    # --- organic item engagement --------------------------------------------------------------
    item_click_bias: float = -3.0
    item_conversion_bias: float = -2.5
    # --- the ad label model (see module docstring) --------------------------------------------
    ctr_bias: float = -2.6
    w_long: float = 2.5
    w_intent: float = 2.5
    w_memory: float = 1.0
    w_quality: float = 0.5
    cvr_bias: float = -1.6
    v_long: float = 1.5
    v_memory: float = 0.8
    v_quality: float = 0.5
    surfaces: tuple[str, ...] = ("feed", "reels", "search", "stories")
    devices: tuple[str, ...] = ("ios", "android", "web")
    id_prefix: str = ""  # prepended to user/item/ad ids (to keep two worlds apart in one store)

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        d = dict(d)
        for name in ("surfaces", "devices"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)


class RawEvent(NamedTuple):
    """One event as the world produces it (indices, not ids); ``UserEvent`` is its public form."""

    timestamp_ms: int
    user: int
    seq: int  # per-user event counter (the event id)
    action: ActionType
    is_ad: bool
    index: int  # item index, or ad index when is_ad
    surface: int
    value: float
    p_click: float  # label-model probabilities (ad impressions only, else nan)
    p_conversion: float
    impression_seq: int  # for clicks/conversions on an ad: the seq of their impression, else -1


@dataclass
class UserState:
    """What the label model reads about a user at a time (intent decays lazily)."""

    intent: np.ndarray  # (k,) decayed sum of engaged latents
    intent_weight: float = 0.0  # decayed count, so intent / weight is the decayed mean
    last_ms: int = 0
    memory: dict[int, int] = field(default_factory=dict)  # brand -> conversions ever

    def decay_to(self, t_ms: int, half_life_ms: float) -> None:
        if self.last_ms and t_ms > self.last_ms:
            f = 0.5 ** ((t_ms - self.last_ms) / half_life_ms)
            self.intent *= f
            self.intent_weight *= f
        self.last_ms = max(self.last_ms, t_ms)

    def intent_vector(self) -> np.ndarray:
        return self.intent / (self.intent_weight + 1.0)  # shrunk towards 0 when evidence is thin

    def engage(self, latent: np.ndarray, weight: float) -> None:
        self.intent += weight * latent
        self.intent_weight += weight


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class SyntheticWorld:
    """The world: static catalogue built from the seed, users streamed on demand."""

    def __init__(self, cfg: WorldConfig | None = None) -> None:
        self.cfg = cfg = cfg or WorldConfig()
        rng = np.random.default_rng([cfg.seed, 0])
        k = cfg.latent_dim
        self.brand_latent = _unit(rng.standard_normal((cfg.n_brands, k)))
        self.item_brand = rng.integers(0, cfg.n_brands, cfg.n_items)
        self.ad_brand = rng.integers(0, cfg.n_brands, cfg.n_ads)
        self.item_latent = _unit(
            0.8 * self.brand_latent[self.item_brand]
            + 0.6 * _unit(rng.standard_normal((cfg.n_items, k)))
        )
        self.ad_latent = _unit(
            0.8 * self.brand_latent[self.ad_brand]
            + 0.6 * _unit(rng.standard_normal((cfg.n_ads, k)))
        )
        # Content: a fixed random view of the latent plus noise, stored as float16 like Redis.
        view = rng.standard_normal((k, cfg.content_dim)) / math.sqrt(k) * 2.0
        self.item_content = self._content(self.item_latent @ view, rng)
        self.ad_content = self._content(self.ad_latent @ view, rng)
        # Zipf popularity for items; a per-ad quality and observable float features.
        ranks = rng.permutation(cfg.n_items) + 1
        pop = 1.0 / ranks**0.8
        self.item_popularity = pop / pop.sum()
        self.ad_quality = rng.standard_normal(cfg.n_ads)
        self.ad_floats = np.zeros((cfg.n_ads, cfg.ad_float_dim), dtype=np.float32)
        base = [
            self.ad_quality + 0.5 * rng.standard_normal(cfg.n_ads),  # noisy quality score
            np.exp(rng.normal(0.0, 0.7, cfg.n_ads)),  # bid
            np.exp(rng.normal(3.0, 1.0, cfg.n_ads)),  # price
            np.bincount(self.ad_brand, minlength=cfg.n_brands)[self.ad_brand],  # brand size
        ]
        for j in range(cfg.ad_float_dim):
            self.ad_floats[:, j] = base[j % len(base)]
        # Users: two orthogonal unit vectors spanning the drift plane, phase, peak hour, level.
        a = _unit(rng.standard_normal((cfg.n_users, k)))
        b = rng.standard_normal((cfg.n_users, k))
        b = _unit(b - (b * a).sum(-1, keepdims=True) * a)
        self.user_a, self.user_b = a, b
        self.user_phase = rng.uniform(0, 2 * math.pi, cfg.n_users)
        self.user_peak_hour = rng.normal(19.0, 3.0, cfg.n_users) % 24
        self.user_activity = np.exp(rng.normal(0.0, 0.4, cfg.n_users))
        self.user_device = rng.integers(0, len(cfg.devices), cfg.n_users)
        self.user_surface_pref = rng.dirichlet(np.ones(len(cfg.surfaces)) * 2.0, cfg.n_users)

    def _content(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = clean + self.cfg.content_noise * rng.standard_normal(clean.shape)
        return noisy.astype(np.float16).astype(np.float32)

    # --- ids ----------------------------------------------------------------------------------
    def user_id(self, u: int) -> str:
        return f"{self.cfg.id_prefix}user{u}"

    def item_id(self, i: int) -> str:
        return f"{self.cfg.id_prefix}item{i}"

    def ad_id(self, a: int) -> str:
        return f"{self.cfg.id_prefix}ad{a}"

    def advertiser_id(self, a: int) -> str:
        return f"{self.cfg.id_prefix}brand{self.ad_brand[a]}"

    def event_id(self, u: int, seq: int) -> str:
        return f"{self.cfg.id_prefix}s{self.cfg.seed}-u{u}-e{seq}"

    def device(self, u: int) -> str:
        return self.cfg.devices[self.user_device[u]]

    # --- the label model ----------------------------------------------------------------------
    def long_interest(self, u: int, t_ms: int) -> np.ndarray:
        theta = self.user_phase[u] + 2 * math.pi * t_ms / (self.cfg.drift_period_days * MS_PER_DAY)
        return math.cos(theta) * self.user_a[u] + math.sin(theta) * self.user_b[u]

    def impression_label_probs(
        self, u: int, ad: int, t_ms: int, state: UserState
    ) -> tuple[float, float]:
        """P(click), P(conversion) of showing ``ad`` to user ``u`` at ``t_ms`` in ``state``."""
        c = self.cfg
        state.decay_to(t_ms, c.intent_half_life_h * MS_PER_HOUR)
        z = self.ad_latent[ad]
        s_long = float(self.long_interest(u, t_ms) @ z)
        s_intent = float(state.intent_vector() @ z)
        s_mem = math.log1p(state.memory.get(int(self.ad_brand[ad]), 0))
        q = float(self.ad_quality[ad])
        p_click = _sigmoid(
            c.ctr_bias
            + c.w_long * s_long
            + c.w_intent * s_intent
            + c.w_memory * s_mem
            + c.w_quality * q
        )
        p_cvr = _sigmoid(c.cvr_bias + c.v_long * s_long + c.v_memory * s_mem + c.v_quality * q)
        return p_click, p_click * p_cvr

    def sample_impression_labels(
        self, u: int, ad: int, t_ms: int, state: UserState, rng: np.random.Generator
    ) -> tuple[int, int]:
        """Draw (click, conversion) for one impression from ``impression_label_probs``."""
        p_click, p_conv = self.impression_label_probs(u, ad, t_ms, state)
        click = rng.random() < p_click
        conv = click and rng.random() < p_conv / p_click
        return int(click), int(conv)

    # --- streaming ----------------------------------------------------------------------------
    def stream_raw(self, start_ms: int, duration_ms: int) -> Iterator[RawEvent]:
        """All users' events in [start_ms, start_ms + duration_ms), in time order."""
        end_ms = start_ms + duration_ms
        streams = [self._user_stream(u, start_ms, end_ms) for u in range(self.cfg.n_users)]
        return heapq.merge(*streams, key=lambda e: (e.timestamp_ms, e.user))

    def stream_events(self, start_ms: int, duration_ms: int) -> Iterator[UserEvent]:
        """The public stream: contract UserEvents in time order (the producer publishes these).

        Ad impressions carry their label-model probabilities in ``metadata`` (``p_click``,
        ``p_conversion``); clicks and conversions on an ad name their ``impression_id``.
        """
        for e in self.stream_raw(start_ms, duration_ms):
            yield self.to_user_event(e)

    def to_user_event(self, e: RawEvent) -> UserEvent:
        meta: dict[str, str] = {}
        if e.action == ActionType.IMPRESSION:
            meta = {"p_click": f"{e.p_click:.6f}", "p_conversion": f"{e.p_conversion:.6f}"}
        elif e.impression_seq >= 0:
            meta = {"impression_id": self.event_id(e.user, e.impression_seq)}
        content = self.ad_content[e.index] if e.is_ad else self.item_content[e.index]
        return UserEvent(
            event_id=self.event_id(e.user, e.seq),
            user_id=self.user_id(e.user),
            timestamp_ms=e.timestamp_ms,
            action_type=e.action,
            item_id=self.ad_id(e.index) if e.is_ad else self.item_id(e.index),
            surface=self.cfg.surfaces[e.surface],
            content_embedding=tuple(content.tolist()),
            value=e.value,
            metadata=meta,
        )

    def _session_starts(self, u: int, day_ms: int, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        n = rng.poisson(c.sessions_per_day * self.user_activity[u])
        hours = (self.user_peak_hour[u] + c.session_hour_std * rng.standard_normal(n)) % 24
        return np.sort(day_ms + (hours * MS_PER_HOUR).astype(np.int64))

    def _user_stream(self, u: int, start_ms: int, end_ms: int) -> Iterator[RawEvent]:
        c = self.cfg
        rng = np.random.default_rng([c.seed, 1, u])
        state = UserState(np.zeros(c.latent_dim))
        half_life = c.intent_half_life_h * MS_PER_HOUR
        seq = 0
        t = start_ms
        day0 = start_ms - start_ms % MS_PER_DAY
        for day_ms in range(day0, end_ms, MS_PER_DAY):
            events: list[RawEvent] = []
            for s in self._session_starts(u, day_ms, rng):
                t = max(int(s), t + 60 * MS_PER_SECOND)  # sessions never overlap
                for _ in range(rng.geometric(1.0 / c.events_per_session)):
                    t += int(rng.exponential(30.0) * MS_PER_SECOND) + 1
                    surface = int(rng.choice(len(c.surfaces), p=self.user_surface_pref[u]))
                    if rng.random() < c.ad_slot_rate:
                        new, t = self._ad_slot(u, t, surface, seq, state, rng)
                    else:
                        new, t = self._item_slot(u, t, surface, seq, state, rng, half_life)
                    seq += len(new)
                    events += new
            for e in events:
                if e.timestamp_ms >= end_ms:
                    return
                if e.timestamp_ms >= start_ms:
                    yield e

    def _item_slot(self, u, t, surface, seq, state, rng, half_life):
        c = self.cfg
        state.decay_to(t, half_life)
        pool = rng.choice(c.n_items, size=c.item_pool, p=self.item_popularity)
        taste = self.long_interest(u, t) + state.intent_vector()
        scores = self.item_latent[pool] @ taste
        w = np.exp((scores - scores.max()) / c.choice_temperature)
        j = int(rng.choice(c.item_pool, p=w / w.sum()))
        item, score = int(pool[j]), float(scores[j])
        dwell = float(np.exp(rng.normal(1.5 + score, 0.8)))
        nan = math.nan
        out = [RawEvent(t, u, seq, ActionType.VIEW, False, item, surface, dwell, nan, nan, -1)]
        state.engage(self.item_latent[item], 0.3)
        if rng.random() < _sigmoid(c.item_click_bias + 2.0 * score):
            t += int(rng.exponential(5.0) * MS_PER_SECOND) + 1
            out.append(
                RawEvent(t, u, seq + 1, ActionType.CLICK, False, item, surface, 0.0, nan, nan, -1)
            )
            state.engage(self.item_latent[item], 1.0)
            if rng.random() < _sigmoid(c.item_conversion_bias + 2.0 * score):
                t += int(rng.exponential(120.0) * MS_PER_SECOND) + 1
                price = float(np.exp(rng.normal(3.0, 1.0)))
                out.append(
                    RawEvent(
                        t,
                        u,
                        seq + 2,
                        ActionType.CONVERSION,
                        False,
                        item,
                        surface,
                        price,
                        nan,
                        nan,
                        -1,
                    )
                )
                brand = int(self.item_brand[item])
                state.memory[brand] = state.memory.get(brand, 0) + 1
                state.engage(self.item_latent[item], 2.0)
        return out, t

    def _ad_slot(self, u, t, surface, seq, state, rng):
        c = self.cfg
        ad = int(rng.integers(c.n_ads))
        p_click, p_conv = self.impression_label_probs(u, ad, t, state)
        nan = math.nan
        out = [
            RawEvent(t, u, seq, ActionType.IMPRESSION, True, ad, surface, 0.0, p_click, p_conv, -1)
        ]
        if rng.random() < p_click:
            t += int(rng.exponential(3.0) * MS_PER_SECOND) + 1
            out.append(
                RawEvent(t, u, seq + 1, ActionType.CLICK, True, ad, surface, 0.0, nan, nan, seq)
            )
            state.engage(self.ad_latent[ad], 1.0)
            if rng.random() < p_conv / p_click:
                t += int(rng.exponential(120.0) * MS_PER_SECOND) + 1
                price = float(self.ad_floats[ad, 2 % c.ad_float_dim])
                out.append(
                    RawEvent(
                        t,
                        u,
                        seq + 2,
                        ActionType.CONVERSION,
                        True,
                        ad,
                        surface,
                        price,
                        nan,
                        nan,
                        seq,
                    )
                )
                brand = int(self.ad_brand[ad])
                state.memory[brand] = state.memory.get(brand, 0) + 1
                state.engage(self.ad_latent[ad], 2.0)
        return out, t

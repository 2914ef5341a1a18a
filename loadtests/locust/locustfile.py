"""Locust load test: ranking requests on an open-loop schedule, Kafka events alongside.

    locust -f loadtests/locust/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --users 64 --spawn-rate 64 --run-time 60s --rate 20 --arrival poisson RankUser

or, with the summary and an SLO check, ``python -m loadtests.locust.run`` (``make loadtest``).

* ``RankUser`` sends ``POST /v1/rank`` bodies for the population of ``loadtests.locust.traffic``
  (fresh, stale and never-seen users; 50-500 candidates; a share with inline events). The send
  times come from one seeded ``Dispatcher`` per Locust process (constant, Poisson or bursty
  arrivals at ``--rate``); each user takes the next due time when it is free. With enough users
  (``--users`` well above rate x worst latency) this is open-loop; when every user is busy an
  arrival is sent late, and the ``late`` count in ``--extra-stats`` says how often.
* ``EventPublisher`` (one user) publishes contract ``UserEvent``s to Kafka at ``--event-rate``,
  a ``--conversion-share`` of them conversions, so the upstream refreshes embeddings of the
  same users while they are being ranked (the paper's setting).

The rate is per Locust process: run it single-process (no ``--processes``/workers), or divide.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, User, constant, events, task
from locust.exception import StopUser

# `locust -f loadtests/locust/locustfile.py` puts only loadtests/locust/ on sys.path; the root
# (or /app in the Locust image) is needed for `loadtests.*` and `shared_model.*`.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from loadtests.locust.arrivals import KINDS, ArrivalSpec, Dispatcher  # noqa: E402
from loadtests.locust.traffic import (  # noqa: E402
    KAFKA_NAME,
    RANK_NAME,
    Population,
    RequestMix,
    build_rank_request,
    build_user_event,
)

log = logging.getLogger(__name__)

_JSON = {"content-type": "application/json"}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    g = parser.add_argument_group("llatte load test")
    g.add_argument("--rate", type=float, default=10.0, help="ranking requests per second")
    g.add_argument("--arrival", choices=KINDS, default="poisson")
    g.add_argument("--arrival-seed", type=int, default=0)
    g.add_argument("--population-users", type=int, default=1000)
    g.add_argument("--fresh-share", type=float, default=0.6)
    g.add_argument("--stale-share", type=float, default=0.2)
    g.add_argument("--user-prefix", default="lt")
    g.add_argument("--min-candidates", type=int, default=50)
    g.add_argument("--max-candidates", type=int, default=500)
    g.add_argument("--inline-share", type=float, default=0.1)
    g.add_argument("--content-dim", type=int, default=0, help="0: send content ids")
    g.add_argument("--candidate-floats", type=int, default=0)
    g.add_argument("--body-pool", type=int, default=256, help="distinct pre-built bodies")
    g.add_argument("--kafka-bootstrap", default="", help="host:port; empty: no events")
    g.add_argument("--events-topic", default="user-events")
    g.add_argument("--event-rate", type=float, default=0.0, help="Kafka events per second")
    g.add_argument("--conversion-share", type=float, default=0.1)
    g.add_argument("--extra-stats", default="", help="write dispatch/outcome stats JSON here")


@dataclass
class _RunState:
    """Per-process state built once the options are known (at test start)."""

    population: Population = field(default_factory=Population)
    bodies: list[tuple[str, bytes]] = field(default_factory=list)  # (user kind, JSON body)
    rank_dispatcher: Dispatcher | None = None
    event_dispatcher: Dispatcher | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    candidates_sent: int = 0


_state = _RunState()


def population_from(options: Any) -> Population:
    return Population(
        users=options.population_users,
        fresh_share=options.fresh_share,
        stale_share=options.stale_share,
        prefix=options.user_prefix,
    )


def mix_from(options: Any) -> RequestMix:
    return RequestMix(
        min_candidates=options.min_candidates,
        max_candidates=options.max_candidates,
        inline_share=options.inline_share,
        content_dim=options.content_dim,
        candidate_floats=options.candidate_floats,
    )


def build_body_pool(options: Any) -> list[tuple[str, bytes]]:
    """Pre-serialised bodies, so that the load generator's own CPU use stays small (it shares
    the cores with the system under test). Request times are left to the server's clock."""
    rng = random.Random(options.arrival_seed + 1)
    population, mix = population_from(options), mix_from(options)
    bodies = []
    for _ in range(options.body_pool):
        body = build_rank_request(rng, population, mix)
        body["context"].pop("time_ms", None)
        kind = body["user_id"].split("-")[-2]  # fresh | stale | new
        bodies.append((kind, json.dumps(body, separators=(",", ":")).encode()))
    return bodies


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    start = time.monotonic()
    _state.population = population_from(options)
    _state.bodies = build_body_pool(options)
    _state.outcomes.clear()
    _state.candidates_sent = 0
    _state.rank_dispatcher = Dispatcher(
        ArrivalSpec(options.rate, options.arrival, options.arrival_seed), start=start
    )
    if options.event_rate > 0:
        _state.event_dispatcher = Dispatcher(
            ArrivalSpec(options.event_rate, "poisson", options.arrival_seed + 7), start=start
        )
    log.info(
        "%s arrivals at %.1f/s, %d bodies, events %.1f/s",
        options.arrival,
        options.rate,
        len(_state.bodies),
        options.event_rate,
    )


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    path = getattr(environment.parsed_options, "extra_stats", "")
    if not path:
        return
    stats = {
        "rank_dispatch": _state.rank_dispatcher.stats() if _state.rank_dispatcher else None,
        "event_dispatch": _state.event_dispatcher.stats() if _state.event_dispatcher else None,
        "upstream_outcomes": dict(_state.outcomes),
        "candidates_sent": _state.candidates_sent,
    }
    Path(path).write_text(json.dumps(stats, indent=2))


class RankUser(HttpUser):
    """Sends ranking requests at the dispatcher's due times (open loop)."""

    wait_time = constant(0)  # the task sleeps until its due time itself

    @task
    def rank(self) -> None:
        dispatcher = _state.rank_dispatcher
        if dispatcher is None:  # started without test_start (should not happen)
            gevent.sleep(0.1)
            return
        delay = dispatcher.wait()
        # The arrival's index is fixed now: other users take the next ones while this one sleeps.
        kind, body = _state.bodies[dispatcher.dispatched % len(_state.bodies)]
        gevent.sleep(delay)
        with self.client.post(
            RANK_NAME, data=body, headers=_JSON, name=RANK_NAME, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                reply = response.json()
                _state.outcomes[f"{kind} user: {reply['upstream']['outcome']}"] += 1
                _state.candidates_sent += len(reply["candidates"])
            except (ValueError, KeyError, TypeError) as e:
                response.failure(f"bad response body: {e}")


class EventPublisher(User):
    """Publishes user events to Kafka at ``--event-rate`` (one user is enough)."""

    fixed_count = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if options.event_rate <= 0 or not options.kafka_bootstrap:
            raise StopUser()
        from kafka import KafkaProducer  # only a run that publishes needs it

        self.topic = options.events_topic
        self.conversion_share = options.conversion_share
        self.rng = random.Random(options.arrival_seed + 11)
        self.seq = 0
        # Not idempotent: Tansu cannot reinitialise an idempotent producer (stack/servers.py).
        self.producer = KafkaProducer(
            bootstrap_servers=options.kafka_bootstrap,
            enable_idempotence=False,
            acks=1,
            linger_ms=5,
        )

    def on_stop(self) -> None:
        producer = getattr(self, "producer", None)
        if producer is not None:
            producer.flush(timeout=10)
            producer.close(timeout=10)

    @task
    def publish(self) -> None:
        dispatcher = _state.event_dispatcher
        if dispatcher is None:
            raise StopUser()
        gevent.sleep(dispatcher.wait())
        self.seq += 1
        event = build_user_event(self.rng, _state.population, self.seq, self.conversion_share)
        start = time.perf_counter()
        payload = event.encode()
        fire = self.environment.events.request.fire

        def done(_: Any) -> None:
            fire(
                request_type="KAFKA",
                name=KAFKA_NAME,
                response_time=1000 * (time.perf_counter() - start),
                response_length=len(payload),
                exception=None,
                context={},
            )

        def failed(error: BaseException) -> None:
            fire(
                request_type="KAFKA",
                name=KAFKA_NAME,
                response_time=1000 * (time.perf_counter() - start),
                response_length=0,
                exception=error,
                context={},
            )

        future = self.producer.send(self.topic, key=event.kafka_key(), value=payload)
        future.add_callback(done)
        future.add_errback(failed)

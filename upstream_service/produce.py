"""``llatte-produce`` (``python -m upstream_service.produce``): publish user events at a rate.

Sources: a JSONL file of contract events (``--jsonl``), the seeded synthetic world
(``shared_model.data.synthetic``, the default) or a simple built-in generator (``--simple``, also
the fallback when the synthetic world is not importable). With ``--restamp`` every event is
re-stamped with the wall-clock time it is sent, so freshness measured downstream is real.

    llatte-produce --kafka 127.0.0.1:19092 --rate 200 --count 10000
    llatte-produce --jsonl events.jsonl --rate 0
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import random
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from kafka import KafkaProducer
from tqdm import tqdm

from shared_model.contract import ActionType, UserEvent
from upstream_service.consumer import build_producer
from upstream_service.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
DEMO_WORLD = "shared_model/configs/demo_world.json"  # catalogue of the demo checkpoints


def jsonl_events(path: Path) -> Iterator[UserEvent]:
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield UserEvent.from_json_dict(json.loads(line))
                except (ValueError, json.JSONDecodeError) as e:
                    raise SystemExit(f"{path}:{n}: {e}") from None


def simple_events(
    n_users: int, seed: int, conversion_share: float = 0.05, start_ms: int | None = None
) -> Iterator[UserEvent]:
    """An endless stream of random users' impressions, views, clicks and conversions."""
    rng = random.Random(seed)
    t = start_ms if start_ms is not None else int(time.time() * 1000)
    other = [ActionType.IMPRESSION, ActionType.VIEW, ActionType.CLICK]
    for seq in itertools.count():
        t += rng.randint(0, 20)
        if rng.random() < conversion_share:
            action = ActionType.CONVERSION
        else:
            action = rng.choices(other, weights=[0.5, 0.4, 0.1])[0]
        yield UserEvent(
            event_id=f"simple-{seed}-{seq}",
            user_id=f"user-{rng.randrange(n_users)}",
            timestamp_ms=t,
            action_type=action,
            item_id=f"item-{rng.randrange(10 * n_users)}",
            surface=rng.choice(["feed", "reels", "search"]),
        )


def synthetic_events(n_users: int, seed: int, start_ms: int) -> Iterator[UserEvent] | None:
    try:
        from shared_model.data.synthetic import SyntheticWorld, WorldConfig
    except ImportError:
        return None
    # The demo world's catalogue (items, ads, content), so events match the trained models.
    base = json.loads((Path(__file__).resolve().parents[1] / DEMO_WORLD).read_text())
    world = SyntheticWorld(WorldConfig.from_dict({**base, "seed": seed, "n_users": n_users}))
    return world.stream_events(start_ms, 365 * DAY_MS)


def publish(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[UserEvent],
    rate: float = 0.0,
    restamp: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> int:
    """Send events at ``rate`` per second (0 = as fast as possible); returns how many were sent.

    Pacing follows a schedule (event i leaves at start + i / rate), so a slow send is caught up
    rather than lowering the average rate.
    """
    bar = tqdm(total=total, unit="ev", disable=not progress, file=sys.stderr, smoothing=0.1)
    start = time.perf_counter()
    sent = 0
    try:
        for i, event in enumerate(events):
            if rate > 0:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if restamp:
                event = dataclasses.replace(event, timestamp_ms=int(time.time() * 1000))
            producer.send(topic, key=event.kafka_key(), value=event.encode())
            sent += 1
            bar.update(1)
        producer.flush()
    finally:
        bar.close()
    return sent


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--kafka", default=settings.kafka_bootstrap_servers, help="bootstrap servers, host:port"
    )
    p.add_argument("--brokers", dest="kafka", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--topic", default=settings.events_topic)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--jsonl", type=Path, help="a file of contract events, one JSON per line")
    src.add_argument("--simple", action="store_true", help="the built-in random generator")
    p.add_argument("--rate", type=float, default=100.0, help="events per second (0 = max)")
    p.add_argument("--count", type=int, default=None, help="stop after this many events")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restamp", action="store_true", help="stamp events with the send time")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # its INFO lines drown the progress

    now_ms = int(time.time() * 1000)
    if args.jsonl:
        events: Iterable[UserEvent] = jsonl_events(args.jsonl)
    elif args.simple or (events := synthetic_events(args.users, args.seed, now_ms)) is None:
        if not args.simple:
            log.warning("shared_model.data.synthetic not available: using the simple generator")
        events = simple_events(args.users, args.seed, start_ms=now_ms)
    if args.count is not None:
        events = itertools.islice(events, args.count)

    producer = build_producer(settings.model_copy(update={"kafka_bootstrap_servers": args.kafka}))
    try:
        n = publish(
            producer,
            args.topic,
            events,
            rate=args.rate,
            restamp=args.restamp,
            progress=not args.no_progress,
            total=args.count,
        )
    except KeyboardInterrupt:
        n = -1
    finally:
        producer.close(timeout=10)
    if n >= 0:
        log.info("published %d events to %s", n, args.topic)
    return 0


if __name__ == "__main__":
    sys.exit(main())

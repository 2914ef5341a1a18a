"""Locust users for the soak (``python -m tests.reliability.soak``): ranking plus Kafka events.

Configured by the soak through ``SOAK_*`` variables. Each user ranks for a random user of a
fixed pool and now and then publishes that user's events (views, clicks, a conversion) to the
events topic; acknowledged conversions are appended to ``SOAK_CONVERSIONS`` so that the soak
can check afterwards that every one of them reached an embedding.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from kafka import KafkaProducer
from locust import HttpUser, constant_throughput, events, task

USERS = int(os.environ.get("SOAK_USER_POOL", "200"))
CONTENT_DIM = int(os.environ["SOAK_CONTENT_DIM"])
N_FLOATS = int(os.environ["SOAK_N_FLOATS"])
TOPIC = os.environ["SOAK_TOPIC"]
BOOTSTRAP = os.environ["SOAK_BOOTSTRAP"]
CONVERSIONS = os.environ["SOAK_CONVERSIONS"]


def rank_body(rng: random.Random, user: str) -> dict:
    n = rng.choice([5, 10, 20, 50])
    return {
        "user_id": user,
        "context": {"surface": "feed", "device": rng.choice(["ios", "android", "web"])},
        "candidates": [
            {
                "ad_id": f"ad-{rng.randrange(10_000)}",
                "advertiser_id": f"adv-{rng.randrange(100)}",
                "content_embedding": [rng.uniform(-1, 1) for _ in range(CONTENT_DIM)],
                "floats": [rng.random() for _ in range(N_FLOATS)],
            }
            for _ in range(n)
        ],
    }


class SoakUser(HttpUser):
    wait_time = constant_throughput(4)  # requests per second per simulated user

    def on_start(self) -> None:
        self.rng = random.Random(uuid.uuid4().int)
        self.producer = KafkaProducer(
            bootstrap_servers=BOOTSTRAP, enable_idempotence=False, linger_ms=5, acks="all"
        )

    def on_stop(self) -> None:
        self.producer.close(timeout=5)

    @task(5)
    def rank(self) -> None:
        user = f"soak-{self.rng.randrange(USERS):04d}"
        with self.client.post(
            "/v1/rank", json=rank_body(self.rng, user), name="/v1/rank", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")

    @task(1)
    def publish_events(self) -> None:
        user = f"soak-{self.rng.randrange(USERS):04d}"
        now = int(time.time() * 1000)
        actions = ["view", "click", "view", "conversion"] if self.rng.random() < 0.3 else ["view"]
        start = time.perf_counter()
        error: Exception | None = None
        try:
            futures = []
            for i, action in enumerate(actions):
                event = {
                    "event_id": uuid.uuid4().hex,
                    "user_id": user,
                    "timestamp_ms": now + i,
                    "action_type": action,
                    "item_id": f"item-{self.rng.randrange(500)}",
                }
                value = json.dumps(event).encode()
                futures.append(self.producer.send(TOPIC, key=user.encode(), value=value))
            for f in futures:
                f.get(timeout=10)
            if "conversion" in actions:
                with open(CONVERSIONS, "a") as out:
                    out.write(f"{user} {now + len(actions) - 1}\n")
        except Exception as e:  # reported to Locust as a failed "kafka" request
            error = e
        events.request.fire(
            request_type="KAFKA",
            name="publish user events",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(actions),
            exception=error,
            context={},
        )

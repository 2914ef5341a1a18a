"""``python -m upstream_service``: run one upstream worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from upstream_service.settings import Settings
from upstream_service.worker import Worker

log = logging.getLogger("upstream_service")


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    worker = Worker(settings)

    def _graceful(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The system on one machine, and the real-server helpers the tests use too.

* ``servers``: redis-server, the Tansu Kafka broker, Prometheus and service processes, each in
  its own process group on a loopback port, stopped with it;
* ``local_stack``: Tansu + redis-server + upstream worker(s) + ranker as one object;
* ``__main__`` (``make stack``, ``llatte-stack``): that stack on fixed ports until Ctrl-C;
* ``demo`` (``make demo``, ``llatte-demo``): the stack, traffic and a report, then exit;
* ``local_ranker``: redis-server + one seeded ranker, for load tests;
* ``checkpoints``: seeded random checkpoint pairs; ``polling``: ``wait_for`` with a deadline.
"""

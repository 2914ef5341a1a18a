"""upstream_service: the Kafka-triggered upstream embedding worker."""

#!/usr/bin/env bash
# One-shot topic setup for docker-compose.yml (the `kafka-init` service, apache/kafka image).
#
# Creates the events topic, the backfill refresh topic and the dead-letter topic, applies their retention and compression,
# then checks that each exists with the partitions asked for. Any failure exits non-zero, so the
# workers, which wait for `service_completed_successfully`, never start against a broker that
# lacks a topic (auto-create is off). `--if-not-exists` keeps an existing topic as it is: a
# larger KAFKA_PARTITIONS later is reported here, not applied (see docs/operations.md).
set -euo pipefail

KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${KAFKA_BOOTSTRAP:-kafka:9092}
EVENTS_TOPIC=${EVENTS_TOPIC:-user-events}
DEAD_LETTER_TOPIC=${DEAD_LETTER_TOPIC:-user-events-dlq}
REFRESH_TOPIC=${REFRESH_TOPIC:-user-refresh}  # backfill refresh requests; empty: none
PARTITIONS=${KAFKA_PARTITIONS:-12}
RETENTION_MS=${KAFKA_RETENTION_MS:-86400000}           # 1 day
RETENTION_BYTES=${KAFKA_RETENTION_BYTES:-1073741824}   # 1 GiB per partition
COMPRESSION=${KAFKA_COMPRESSION:-zstd}
WAIT_S=${KAFKA_INIT_WAIT_S:-120}

log() { echo "kafka-init: $*" >&2; }
topics() { "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" "$@"; }

deadline=$((SECONDS + WAIT_S))
until topics --list >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    log "the broker at $BOOTSTRAP did not answer within ${WAIT_S}s"
    exit 1
  fi
  sleep 1
done

configs="retention.ms=$RETENTION_MS,retention.bytes=$RETENTION_BYTES,compression.type=$COMPRESSION"

ensure_topic() {  # name partitions
  local name=$1 wanted=$2 have
  topics --create --if-not-exists --topic "$name" --partitions "$wanted" \
    --replication-factor 1 --config "retention.ms=$RETENTION_MS" \
    --config "retention.bytes=$RETENTION_BYTES" --config "compression.type=$COMPRESSION"
  # An existing topic keeps its old configs under --if-not-exists: set them every time.
  "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter \
    --entity-type topics --entity-name "$name" --add-config "$configs"
  have=$(topics --describe --topic "$name" | sed -n 's/.*PartitionCount: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
  if [[ -z "$have" ]]; then
    log "topic $name is missing after its creation"
    exit 1
  fi
  if ((have < wanted)); then
    log "WARNING: topic $name has $have partitions, KAFKA_PARTITIONS asks for $wanted;" \
      "an existing topic is not changed. To add partitions (re-maps users to partitions):" \
      "kafka-topics.sh --bootstrap-server $BOOTSTRAP --alter --topic $name --partitions $wanted"
  fi
  log "topic $name: $have partitions, $configs"
}

ensure_topic "$EVENTS_TOPIC" "$PARTITIONS"
ensure_topic "$DEAD_LETTER_TOPIC" 1
if [[ -n "$REFRESH_TOPIC" ]]; then
  ensure_topic "$REFRESH_TOPIC" "$PARTITIONS"
fi
log "done"

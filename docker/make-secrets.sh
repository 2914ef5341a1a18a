#!/usr/bin/env bash
# Writes the compose secrets under ./secrets/ (run by `make up`; docs/operations.md).
#
# REDIS_PASSWORD / GRAFANA_ADMIN_PASSWORD in the environment are written (a rotation: then
# `docker compose up -d --force-recreate`); otherwise an existing file is kept, and a missing
# one gets a random hex value. ranker_redis_url is derived from redis_password every time, so
# the two never disagree. The directory is 0700 (other host users cannot read it); the files
# are 0644 because the containers read them as their own uids (redis, grafana, 10001).
set -euo pipefail

dir=${1:-secrets}
mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

write() {  # name value
  local tmp="$dir/.$1.tmp"
  (umask 0022 && printf '%s\n' "$2" > "$tmp")
  chmod 0644 "$tmp"
  mv "$tmp" "$dir/$1"
}

ensure() {  # name env-value bytes
  if [[ -n "$2" ]]; then
    write "$1" "$2"
  elif [[ ! -s "$dir/$1" ]]; then
    write "$1" "$(random_hex "$3")"
    echo "make-secrets: generated $dir/$1" >&2
  fi
}

ensure redis_password "${REDIS_PASSWORD:-}" 24
ensure grafana_admin_password "${GRAFANA_ADMIN_PASSWORD:-}" 12
password=$(cat "$dir/redis_password")
if [[ ! "$password" =~ ^[A-Za-z0-9._~-]+$ ]]; then
  echo "make-secrets: the Redis password must be URL-safe ([A-Za-z0-9._~-]):" \
    "the ranker takes it inside a redis:// URL" >&2
  exit 1
fi
write ranker_redis_url "redis://:${password}@redis:6379/0"

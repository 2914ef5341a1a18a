#!/bin/sh
# Entrypoint of the Python images: for every NAME__FILE=/path in the environment, export
# NAME=<contents of /path> (trailing newlines dropped), then exec the command. Secrets are
# mounted as files (compose `secrets:`) and never appear in the container's configuration
# (`docker inspect`); Grafana's GF_*__FILE variables follow the same convention.
set -eu
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)__FILE=.*$/\1/p'); do
  eval "path=\${${name}__FILE}"
  if [ ! -f "$path" ] || [ ! -r "$path" ]; then
    echo "secrets-env: ${name}__FILE=$path is not a readable file" >&2
    exit 1
  fi
  value=$(cat "$path")
  export "$name=$value"
  unset "${name}__FILE"
done
exec "$@"

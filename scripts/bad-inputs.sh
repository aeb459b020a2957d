#!/usr/bin/env bash
# Runs the bad-input corpus (tests/bad_inputs.rs generates every case's files) and keeps the
# generated files in ${1:-target/bad-inputs} for inspection. GLIP_BIN=<glip> (and
# GLIP_CDYLIB_DIR=<dir of libglip_rt.so>) run it against another build, e.g. one before a fix.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${1:-target/bad-inputs}")
mkdir -p "$dir"
GLIP_CORPUS_DIR="$dir" cargo test --release --test bad_inputs -- --nocapture
echo "corpus files: $dir"

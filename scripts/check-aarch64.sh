#!/usr/bin/env bash
# The crate builds for aarch64 Linux (Jetson Orin, Grace Hopper: the edge's video-analytics
# platforms): `cargo check` for aarch64-unknown-linux-gnu with Debian's cross gcc (the
# tokenizer's oniguruma is C). The emulated CUDA device is x86-64 code and is left out there
# by build.rs; with nvcc present the kernels are compiled for sm_87 (Orin) and sm_90 (GH200).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
# Installing the tools needs the network (rustup's server, apt); if that fails the check says
# so loudly and is skipped, while a build that fails once the tools are here fails CI.
skip() {
    echo "aarch64 check: SKIPPED: $1" >&2
    exit 0
}
rustup target list --installed | grep -qx "$target" || rustup target add "$target" ||
    skip "cannot install the Rust target $target"
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
    pkgs="gcc-aarch64-linux-gnu g++-aarch64-linux-gnu"
    # shellcheck disable=SC2086
    $sudo apt-get install -y --no-install-recommends $pkgs ||
        { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $pkgs; } ||
        skip "cannot install Debian's cross gcc ($pkgs)"
fi
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
# The runtime only: the GStreamer element would need an aarch64 GStreamer to link against.
GLIP_CUDA_ARCHS="${GLIP_CUDA_ARCHS:-87,90}" cargo check --release --target "$target" --all-targets -p glip-rt
echo "aarch64 check: ok"

#!/usr/bin/env bash
# GStreamer 1.22 (Debian 12) for the glipdetect element (gst-glip/): the development files
# its build needs, and the plugins and gst-launch-1.0 its tests run. Does nothing when they
# are there already.
set -euo pipefail
pkgs="libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-tools"
if pkg-config --exists gstreamer-1.0 gstreamer-base-1.0 gstreamer-video-1.0 \
    && command -v gst-launch-1.0 >/dev/null \
    && gst-inspect-1.0 videotestsrc >/dev/null 2>&1 && gst-inspect-1.0 videoconvert >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo apt-get install -y -q --no-install-recommends $pkgs

#!/usr/bin/env bash
# Debian 12's Chromium and its WebDriver (chromedriver), for the test of glip serve's page
# in a real headless browser (tests/serve_page.rs). Does nothing when they are there already.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core

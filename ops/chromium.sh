#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
set -euo pipefail
source "$(dirname "$0")/common.sh"
CHROMIUM=${ORDERVIEW_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "Chromium is needed for the browser tests: install it (Debian: apt-get install chromium) or set ORDERVIEW_CHROMIUM."
say "installing Chromium from Debian's packages (for the browser tests)"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

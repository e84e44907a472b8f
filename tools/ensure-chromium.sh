#!/usr/bin/env bash
# The browser test drives Debian's Chromium; install it when missing (root + apt), otherwise say why
# the browser test will be skipped. Never fails the test command by itself.
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium for the browser test (one time)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium: the browser test will be skipped"
else
  echo "chromium not found and cannot be installed here: the browser test will be skipped"
fi
exit 0

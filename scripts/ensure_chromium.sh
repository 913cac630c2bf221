#!/usr/bin/env bash
# The HTML report is tested in a real headless browser: install Debian's chromium where it is missing
# (as root with apt); elsewhere the browser test is skipped with a message.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium for the report's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "setup: could not install chromium; the browser test will be skipped"
else
  echo "setup: no chromium and no root apt; the browser test will be skipped"
fi
exit 0

#!/usr/bin/env bash
# The HTML report is tested in a real headless browser: install Debian's chromium where it is missing
# (as root with apt); elsewhere the browser tests are skipped with a message (under CI=true, a failed
# install fails the run instead, so the tests cannot quietly stop running).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium for the report's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || { echo "setup: could not install chromium; the browser tests will be skipped"
         [ "${CI:-}" != true ] || { echo "setup: CI must run the browser tests" >&2; exit 1; }; }
else
  echo "setup: no chromium and no root apt; the browser test will be skipped"
fi
exit 0

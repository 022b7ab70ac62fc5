#!/usr/bin/env bash
# Installs what the browser tests need, when missing: Debian's Chromium and
# ChromeDriver (one source package, so their versions match) and Selenium in
# a virtualenv under target/. Prints the two lines to export.
#
#   eval "$(bash scripts/install-browser.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing chromium and chromium-driver with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >&2
fi

venv="$PWD/target/browser-venv"
if [ ! -x "$venv/bin/python" ]; then
    mkdir -p target
    python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check selenium==4.38.0 >&2

echo "export PARTSEAL_BROWSER_PYTHON='$venv/bin/python'"
echo "export PARTSEAL_CHROMEDRIVER=/usr/bin/chromedriver"

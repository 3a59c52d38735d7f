#!/usr/bin/env bash
# Install Debian's chromium for the Playwright browser test (tests/test_ui.py launches /usr/bin/chromium;
# Playwright's own browser download is not used). Idempotent: does nothing when chromium is already there.
# About 20 s on a fresh Debian 12 machine (apt-get update + chromium and its libraries).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "browser.sh: not root and no sudo: chromium not installed, so the browser test will be skipped" >&2
        exit 0
    fi
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed: $(/usr/bin/chromium --version)"

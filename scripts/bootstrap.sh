#!/usr/bin/env bash
# Installs everything the local stack and the tests need, skipping what is already there:
# Debian's redis-server, postgresql, chromium (headless, for the /monitoring test), the provider
# sandbox's engines (tesseract-ocr with the app's languages, espeak-ng, sox, a font for test
# images), and the pinned Python environment in .venv.
# `bootstrap.sh node` also installs what the node of `make cluster` and `make image` run on:
# Debian's containerd, runc, containernetworking-plugins, iptables, conntrack, buildah and
# debootstrap.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Headless Chromium renders /monitoring in tests/integration/test_monitoring_page.py.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The sandbox reads images with Tesseract, speaks with espeak-ng and encodes with sox;
# espeak-ng also speaks the recordings that tests/integration/test_mobile_media.py encodes as phones do.
for lang in eng deu fra spa ita por nld pol rus swe tur dan nor ron jpn kor chi-sim ara cym isl; do
  [ -f "/usr/share/tesseract-ocr/5/tessdata/${lang//-/_}.traineddata" ] || need_apt+=("tesseract-ocr-$lang")
done
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
ls /usr/lib/*/sox/libsox_fmt_mp3.so >/dev/null 2>&1 || need_apt+=(libsox-fmt-mp3)
ls /usr/lib/*/sox/libsox_fmt_vorbis.so >/dev/null 2>&1 || need_apt+=(libsox-fmt-base)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if [ "${1:-}" = node ]; then
  for pair in containerd:containerd runc:runc iptables:iptables conntrack:conntrack \
              buildah:buildah debootstrap:debootstrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
  done
  [ -x /usr/lib/cni/ptp ] || need_apt+=(containernetworking-plugins)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts system-wide services we do not use; our harness runs its own.
  for svc in redis-server postgresql; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
fi

stamp=".venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the Python environment into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

#!/usr/bin/env bash
# System packages the test suite needs beyond Python, installed on a fresh Debian machine.
#
# - chromium: the browser test drives the real UI through Playwright with the SYSTEM browser
#   (`chromium` on PATH), so no browser is ever downloaded by pip or playwright. Ubuntu's
#   chromium deb is only a stub for the snap: there, install Chromium yourself.
# - wrk: the compiled load generator of `python -m tools.bench.accel` (and its smoke test), so
#   the client's CPU does not decide a benchmark on a small host.
#
# Idempotent and quick when everything is there: it only calls apt-get for missing packages,
# and runs `apt-get update` only when the package lists are absent or apt cannot find a package.
set -euo pipefail

PACKAGES=(chromium wrk)

if ! command -v dpkg-query >/dev/null 2>&1; then
    # Not Debian/Ubuntu: accept tools installed some other way, else say what is needed.
    if command -v chromium >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1; then
        exit 0
    fi
    echo "error: the tests need Chromium as \`chromium\` and wrk as \`wrk\` on PATH;" \
         "install them with your package manager, then rerun" >&2
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages: ${missing[*]}; this script knows only apt-get" \
         "(Debian/Ubuntu). Install them with your package manager, then rerun." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "error: missing system packages: ${missing[*]}; run this script as root or install" \
         "sudo (e.g. as root: apt-get install -y ${missing[*]})" >&2
    exit 1
fi

apt_install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

echo "installing system packages: ${missing[*]}"
# A fresh container has no package lists; otherwise try the existing ones first.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || ! apt_install; then
    "${as_root[@]}" apt-get update -q
    apt_install
fi

#!/usr/bin/env bash
# Shared set-up for scripts/demo and scripts/test: system packages, then a project virtualenv.
# Usage: source scripts/bootstrap.sh <pip extras>   (e.g. "demo" or "dev,demo")
# Idempotent: a second run installs nothing new.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGE_AGENT_VENV:-$ROOT/.venv}"
EXTRAS="${1:-demo}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${need_apt[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# The packaged mosquitto service is not needed: the demo and the tests start private brokers.

python3 - <<'PY' || { echo "edge-agent needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    python3 -m venv "$VENV"
fi
# One stamp per extra and pyproject.toml: "demo" after "dev,demo" installs nothing again.
stamps=()
for extra in ${EXTRAS//,/ }; do
    stamps+=("$VENV/.edge-agent-$extra-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-12)")
done
missing=0
for stamp in "${stamps[@]}"; do [ -f "$stamp" ] || missing=1; done
if [ "$missing" -eq 1 ]; then
    echo "==> installing edge-agent[$EXTRAS] into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
    touch "${stamps[@]}"
fi
export PATH="$VENV/bin:$PATH"

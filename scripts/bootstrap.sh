# Sourced by scripts/run.sh and scripts/test.sh: makes .venv/ at the repo root and
# installs the pinned requirements into it when they changed (a stamp file keeps
# the second run fast).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "llmrum: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
llmrum_install() {
  local req="$1" stamp=".venv/.installed-$(basename "$1")"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp" || [ requirements.txt -nt "$stamp" ]; then
    echo "llmrum: installing $req into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check -q -r "$req"
    cp "$req" "$stamp"
  fi
}

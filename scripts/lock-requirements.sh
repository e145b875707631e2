#!/usr/bin/env bash
# Regenerate examples/deployment/requirements.lock: syncd's runtime dependencies (with the
# postgres and mysql extras) pinned to the versions the dev virtualenv tests, every file's
# sha256 listed; the Dockerfile installs it with `pip install --require-hashes`.
# Needs pip-tools (`pip install pip-tools`) and the index; run it after changing
# pyproject.toml's dependencies or upgrading the venv, then commit the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PYTHON" -m pip freeze --exclude-editable | grep -v '^#' >"$constraints"
{
  echo "# syncd's runtime dependencies, locked with hashes: regenerate with scripts/lock-requirements.sh"
  echo "# (pip-compile --generate-hashes, constrained to the versions the test virtualenv runs)."
  "$PYTHON" -m piptools compile --quiet --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe --strip-extras \
    --extra postgres --extra mysql -c "$constraints" --no-header -o - pyproject.toml |
    sed "s|$constraints|constraints (the venv)|"
} >examples/deployment/requirements.lock.new
mv examples/deployment/requirements.lock.new examples/deployment/requirements.lock
echo "wrote examples/deployment/requirements.lock"

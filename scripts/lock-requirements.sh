#!/usr/bin/env bash
# Regenerate examples/deployment/requirements.lock: syncd's runtime dependencies (with the
# postgres, mysql and rabbitmq extras) pinned to the versions the dev virtualenv tests, every file's
# sha256 listed; the Dockerfile installs it with `pip install --require-hashes`. And
# examples/deployment/build-requirements.lock: the build backend ([build-system].requires:
# hatchling, hatch-vcs and what they need, setuptools included), the same way; the
# Dockerfile builds the wheel with it and --no-build-isolation.
# Needs pip-tools (`pip install pip-tools`) and the index; run it after changing
# pyproject.toml's dependencies or upgrading the venv, then commit the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PYTHON" -m pip freeze --all --exclude-editable | grep -v '^#' >"$constraints"
{
  echo "# syncd's runtime dependencies, locked with hashes: regenerate with scripts/lock-requirements.sh"
  echo "# (pip-compile --generate-hashes, constrained to the versions the test virtualenv runs)."
  "$PYTHON" -m piptools compile --quiet --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe --strip-extras \
    --extra postgres --extra mysql --extra rabbitmq -c "$constraints" --no-header -o - pyproject.toml |
    sed "s|$constraints|constraints (the venv)|"
} >examples/deployment/requirements.lock.new
mv examples/deployment/requirements.lock.new examples/deployment/requirements.lock
echo "wrote examples/deployment/requirements.lock"
{
  echo "# syncd's BUILD requirements (pyproject.toml [build-system]: hatchling, hatch-vcs and what"
  echo "# they need), locked with hashes: the Dockerfile installs them with --require-hashes and"
  echo "# builds the wheel with --no-build-isolation, so no build input floats."
  echo "# Regenerate with scripts/lock-requirements.sh (it writes requirements.lock too)."
  echo
  "$PYTHON" -m piptools compile --quiet --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe \
    --build-deps-for wheel --only-build-deps -c "$constraints" --no-header -o - pyproject.toml |
    sed "s|$constraints|constraints (the venv)|"
} >examples/deployment/build-requirements.lock.new
mv examples/deployment/build-requirements.lock.new examples/deployment/build-requirements.lock
echo "wrote examples/deployment/build-requirements.lock"

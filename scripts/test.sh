#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds its own virtualenvs, then runs ruff and pytest on the
# newest Airflow we support and again on the lowest one. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
AIRFLOW_LATEST="${AIRFLOW_LATEST:-3.3.2}"
AIRFLOW_LOWEST="${AIRFLOW_LOWEST:-3.1.8}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

make_venv() {  # make_venv DIR AIRFLOW_VERSION
    local dir="$1" version="$2"
    if [ ! -x "$dir/bin/python" ]; then
        "$PYTHON" -m venv "$dir"
    fi
    echo "== installing into $dir (apache-airflow==$version)"
    "$dir/bin/python" -m pip install --quiet -e ".[test]" "apache-airflow==$version"
}

make_venv .venv-test "$AIRFLOW_LATEST"
echo "== ruff"
.venv-test/bin/ruff check .
.venv-test/bin/ruff format --check .

echo "== pytest on Apache Airflow $AIRFLOW_LATEST"
.venv-test/bin/python -m pytest -p no:cacheprovider -q "$@"

if [ "${SKIP_LOWEST:-0}" != "1" ]; then
    make_venv .venv-test-low "$AIRFLOW_LOWEST"
    echo "== pytest on Apache Airflow $AIRFLOW_LOWEST (lowest supported): the Airflow-facing tests"
    .venv-test-low/bin/python -m pytest -p no:cacheprovider -q -m airflow "$@"
fi

#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds its own virtualenvs, then runs ruff and pytest on the
# newest Airflow we support and again on the lowest one. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
AIRFLOW_LATEST="${AIRFLOW_LATEST:-3.3.2}"
AIRFLOW_LOWEST="${AIRFLOW_LOWEST:-3.1.8}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

make_venv() {  # make_venv DIR AIRFLOW_VERSION PACKAGES...
    local dir="$1" version="$2"
    shift 2
    if [ ! -x "$dir/bin/python" ]; then
        "$PYTHON" -m venv "$dir"
    fi
    echo "== installing into $dir (apache-airflow==$version)"
    "$dir/bin/python" -m pip install --quiet "$@" "apache-airflow==$version"
}

ensure_chromium() {  # the UI's browser test drives Debian's chromium (never a downloaded browser)
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing Debian's chromium and chromium-driver for the UI browser test"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    fi
}

ensure_chromium
make_venv .venv-test "$AIRFLOW_LATEST" -e ".[test]"
echo "== ruff"
.venv-test/bin/ruff check .
.venv-test/bin/ruff format --check .

echo "== pytest on Apache Airflow $AIRFLOW_LATEST"
.venv-test/bin/python -m pytest -p no:cacheprovider -q "$@"

if [ "${SKIP_LOWEST:-0}" != "1" ]; then
    # The lowest release runs the tests of everything that touches Airflow (provider registration,
    # sensor, triggers, operators, watcher, UI, the example DAGs under dag.test() and in a real
    # deployment); the Airflow-free core is covered above.
    make_venv .venv-test-low "$AIRFLOW_LOWEST" -e ".[plot]" pytest pytest-asyncio pytest-timeout \
        requests-mock hypothesis jsonschema pyyaml selenium
    echo "== pytest on Apache Airflow $AIRFLOW_LOWEST (lowest supported): the Airflow-facing tests"
    .venv-test-low/bin/python -m pytest -p no:cacheprovider -q "$@" tests/test_provider.py \
        tests/test_sensor.py tests/test_trigger.py tests/test_trigger_checkpoints.py tests/test_operator.py \
        tests/test_job_operator.py tests/test_watcher_trigger.py tests/test_cli.py tests/test_errors.py \
        tests/test_example_dags_e2e.py tests/test_deployment_e2e.py tests/test_watcher_e2e.py \
        tests/test_ui_api.py tests/test_ui_browser.py
fi

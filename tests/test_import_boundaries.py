"""What each layer may import: the sans-I/O core only the standard library (tenacity in retry.py alone,
msgspec in responses.py, both shipped by Airflow); the trigger neither requests nor the sync hook."""

from __future__ import annotations

import json
import subprocess
import sys

CORE_MODULES = [
    "api",
    "checkpoint",
    "config",
    "drivers",
    "follow",
    "jobstate",
    "jobtag",
    "jsonl",
    "legacy_stream",
    "paging",
    "polling",
    "responses",
    "retry_rules",
    "spool",
    "sse",
    "watch",
    "window",
]


def loaded_after(code: str) -> set[str]:
    """Top-level packages imported by ``code`` in a fresh interpreter, beyond what Python starts with."""
    script = (
        "import sys, json; before = set(sys.modules)\n"
        + code
        + "\nprint(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_the_core_imports_only_the_standard_library_and_msgspec() -> None:
    imports = "\n".join(f"import airflow_ftevents.core.{name}" for name in CORE_MODULES)
    third_party = loaded_after(imports) - set(sys.stdlib_module_names) - {"airflow_ftevents"}
    assert third_party - loaded_after("import msgspec") == set()  # msgspec and what it imports itself
    assert "msgspec" in third_party


def test_only_retry_py_loads_tenacity() -> None:
    assert "tenacity" in loaded_after("import airflow_ftevents.core.retry")
    assert "tenacity" not in loaded_after("import airflow_ftevents.core.paging, airflow_ftevents.core.follow")


def test_importing_the_triggers_loads_neither_requests_nor_the_hook() -> None:
    code = (
        "import airflow.triggers.base\nbase = set(sys.modules)\nimport airflow_ftevents.triggers\n"
        "new = set(sys.modules) - base\n"
        "assert not any(m == 'requests' or m.startswith('requests.') for m in new), 'requests'\n"
        "assert 'airflow_ftevents.hooks' not in sys.modules, 'hooks'"
    )
    loaded_after(code)  # check=True: the asserts above fail the subprocess


def test_the_async_client_does_not_import_the_sync_hook() -> None:
    code = "import airflow_ftevents.async_client\nassert 'airflow_ftevents.hooks' not in sys.modules"
    loaded_after(code)

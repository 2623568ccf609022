"""Import cost that a DAG file pays for our sensor and operator, on top of ``airflow.sdk``.

DAG files are parsed every few seconds, so what `import airflow_ftevents.sensors, .operators` adds
matters. Each sample is a fresh interpreter: import ``airflow.sdk`` first (every DAG file does), then
time the imports under test. Peers in the same run: the official OpenAI provider's operators and
sensor/trigger modules, and a standard-provider sensor as a floor.

    python bench/bench_import.py [--rounds 15] [--write]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

from results_md import replace_section

CASES = {
    "airflow_ftevents.sensors + .operators": ["airflow_ftevents.sensors", "airflow_ftevents.operators"],
    "official OpenAI provider operators + triggers": [
        "airflow.providers.openai.operators.openai",
        "airflow.providers.openai.triggers.openai",
    ],
    "standard provider TimeDeltaSensor (floor)": ["airflow.providers.standard.sensors.time_delta"],
}

PROBE = """
import time, importlib, json, sys
import airflow.sdk
t0 = time.perf_counter()
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
t1 = time.perf_counter()
print(json.dumps({"ms": (t1 - t0) * 1000, "modules": len(sys.modules)}))
"""


def sample(modules: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CASES}
    modules: dict[str, int] = {}
    for _ in range(args.rounds):  # interleaved, so machine noise hits every case alike
        for name, mods in CASES.items():
            got = sample(mods)
            results[name].append(got["ms"])
            modules[name] = int(got["modules"])
    ours = statistics.median(results["airflow_ftevents.sensors + .operators"])
    rows = [
        "| imports (after `import airflow.sdk`) | median ms | best ms | ratio to ours | modules loaded |",
        "|---|---|---|---|---|",
    ]
    for name, times in results.items():
        med = statistics.median(times)
        rows.append(f"| {name} | {med:.1f} | {min(times):.1f} | {med / ours:.2f}x | {modules[name]} |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        import airflow

        section = (
            "## Import cost of the sensor and operator\n\n"
            f"Command: `python bench/bench_import.py --rounds {args.rounds} --write` "
            f"({time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
            f"Airflow {airflow.__version__}, "
            "2 cores shared). Each sample is a fresh interpreter that has already imported `airflow.sdk`; "
            "cases are interleaved. Goal: under 30 ms.\n\n" + table + "\n"
        )
        replace_section("## Import cost of the sensor and operator", section)


if __name__ == "__main__":
    main()

"""One-command demo: the whole package working in a real Airflow against the local simulator.

    python3 demo.py

Creates ``.venv`` (first run only), installs the package, starts the simulator, runs
``airflow db migrate`` in a temporary AIRFLOW_HOME and ``airflow dags test`` on the first example DAG
(start a fine-tune with FineTuneJobOperator, wait for it in the deferrable trigger, export its events
and the loss plot), stops the simulator and prints where the exported events and the plot are. Needs
only python3 (3.10+) and network access to the package index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
DAG_ID = "example_fine_tune_wait_and_export"
DEMO_KEY = "sk-demo-local-simulator"
OUTPUT = ROOT / "demo-output"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def bootstrap() -> None:
    """Create the virtualenv and install the package, then continue inside it."""
    python = venv_python()
    if not python.exists():
        print(f"[demo] creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    started = time.monotonic()
    print("[demo] installing airflow-ftevents and Apache Airflow (about a minute the first time)", flush=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            f"{ROOT}[plot]",
        ],
        check=True,
    )
    print(f"[demo] installed in {time.monotonic() - started:.0f} s", flush=True)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), "--in-venv"])


def start_simulator(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--api-key", DEMO_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        for word in line.split():
            if word.startswith("http://"):
                return proc, word.rstrip("/")
    proc.kill()
    raise SystemExit(
        "[demo] the simulator did not start; run `python -m airflow_ftevents.simulator` to see why"
    )


def show_progress(log: str, keep: int = 4) -> None:
    """A few of the training-progress lines the trigger logged, without the log decoration."""
    lines = []
    for line in log.splitlines():
        for marker in ("[metrics]", "[info]", "[warn]", "[error]"):
            at = line.find(marker)
            if at != -1 and "loc=jobstate.py" in line:
                lines.append(line[at:].split(" [airflow", 1)[0])
                break
    if not lines:
        return
    print(f"[demo] the trigger logged {len(lines)} job events while it waited, e.g.:")
    shown = lines if len(lines) <= 2 * keep else [*lines[:keep], "...", *lines[-keep:]]
    for line in shown:
        print("    " + line)


def summarize(export_file: Path, base_url: str) -> None:
    import requests

    lines = export_file.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    losses = [
        e["data"]["train_loss"]
        for e in events
        if e.get("type") == "metrics" and isinstance(e.get("data"), dict) and "train_loss" in e["data"]
    ]
    job_id = export_file.stem
    job = requests.get(
        f"{base_url}/fine_tuning/jobs/{job_id}", headers={"Authorization": f"Bearer {DEMO_KEY}"}, timeout=10
    ).json()
    print()
    print("=" * 72)
    print(f"Exported events : {export_file}")
    for extra in sorted(export_file.parent.glob(f"{job_id}.*")):
        if extra != export_file and not extra.name.endswith(".loss.png"):
            print(f"Also written    : {extra}")
    plot = export_file.with_name(f"{job_id}.loss.png")
    print(f"Loss plot       : {plot if plot.exists() else 'not written (pip install matplotlib)'}")
    print(f"Job             : {job_id}")
    print(f"Job status      : {job.get('status')}   fine-tuned model: {job.get('fine_tuned_model')}")
    print(f"Event count     : {len(events)}")
    print(f"Final train loss: {losses[-1] if losses else 'n/a'}")
    print("=" * 72)


def run_demo() -> int:
    home = Path(tempfile.mkdtemp(prefix="ftevents-demo-home-"))
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    OUTPUT.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "FTEVENTS_EXPORT_ROOT": OUTPUT.as_uri(),
        "PYTHONWARNINGS": "ignore",
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    sim, base_url = start_simulator(env)
    print(f"[demo] simulator listening at {base_url}", flush=True)
    env["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
        {"conn_type": "openai_ftevents", "host": base_url, "password": DEMO_KEY, "extra": {"max_retries": 3}}
    )
    try:
        print(f"[demo] airflow db migrate (AIRFLOW_HOME={home})", flush=True)
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"[demo] airflow dags test {DAG_ID}", flush=True)
        result = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True)
        log_file = OUTPUT / "dags-test.log"
        log_file.write_text(result.stdout + result.stderr)
        show_progress(result.stdout + result.stderr)
        if result.returncode != 0:
            print(f"[demo] airflow dags test failed (exit {result.returncode}); full log: {log_file}")
            return result.returncode
        exports = sorted(OUTPUT.rglob("*.jsonl"))
        if not exports:
            print(f"[demo] no export was written; full log: {log_file}")
            return 1
        summarize(exports[0], base_url)
        print(f"Airflow log     : {log_file}")
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
        shutil.rmtree(home, ignore_errors=True)
    print("[demo] simulator stopped; done")
    return 0


if __name__ == "__main__":
    if "--in-venv" in sys.argv:
        sys.exit(run_demo())
    bootstrap()

"""Where an export goes (airflow_ftevents.export.destination): URLs, folders, safe names, missing filesystems.

No Airflow here except where Airflow's own ``airflow.sdk.io`` is what reports a missing filesystem, and
that runs in a subprocess whose fsspec libraries are hidden, so the scheme is unavailable for real.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest
from conftest import ROOT

from airflow_ftevents.errors import ExportDestinationError, FineTuneEventsError
from airflow_ftevents.export import (
    Destination,
    at_path,
    file_name_for,
    open_filesystem,
    resolve_destination,
    split_destination,
)


def local_fs(protocol: str, conn_id: str | None) -> Any:
    assert (protocol, conn_id) == ("file", None)
    return fsspec.filesystem("file")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/data/ft/", ("file", None, "file:///data/ft/", True)),
        ("file:///data/ft/x.jsonl", ("file", None, "file:///data/ft/x.jsonl", False)),
        ("s3://aws_conn@bucket/prefix/", ("s3", "aws_conn", "s3://bucket/prefix/", True)),
        ("s3://bucket/key.jsonl", ("s3", None, "s3://bucket/key.jsonl", False)),
        ("GS://gcp@b/k", ("gs", "gcp", "gs://b/k", False)),
    ],
)
def test_destination_urls_are_split_into_protocol_connection_and_folder(url, expected):
    assert split_destination(url) == expected


@pytest.mark.parametrize("url", ["", "relative/x.jsonl", "file://host/x.jsonl", "s3:bucket/key"])
def test_unusable_destination_urls_are_refused(url):
    with pytest.raises(ValueError, match="destination"):
        split_destination(url)


def test_file_names_from_job_ids_are_safe():
    assert file_name_for("ftjob-abc123") == "ftjob-abc123.jsonl"
    assert file_name_for("../../etc/passwd") == "etc_passwd.jsonl"
    assert file_name_for(".hidden") == "hidden.jsonl"
    assert file_name_for("///") == "job.jsonl"
    assert file_name_for("ftjob-1", ".metrics.csv") == "ftjob-1.metrics.csv"


def test_a_local_folder_gets_a_file_named_after_the_job(tmp_path: Path):
    dest = resolve_destination(f"{tmp_path}/exports/", "ftjob-a/../b", local_fs)
    assert (dest.path, dest.protocol, dest.conn_id) == (
        f"{tmp_path}/exports/ftjob-a_.._b.jsonl",
        "file",
        None,
    )
    assert dest.uri == f"file://{tmp_path}/exports/ftjob-a_.._b.jsonl"
    assert dest.name == "ftjob-a_.._b.jsonl" and dest.local
    assert dest.sibling("x.csv").path == f"{tmp_path}/exports/x.csv"
    named = resolve_destination(f"file://{tmp_path}/a/../named.jsonl", "ftjob-a", local_fs)
    assert named.path == f"{tmp_path}/named.jsonl"  # normalized: no '..' left in the path
    assert os.listdir(tmp_path) == []  # resolving writes nothing


def test_an_existing_local_folder_without_the_slash_is_refused_naming_the_fix(tmp_path: Path):
    with pytest.raises(ValueError) as info:
        resolve_destination(str(tmp_path), "ftjob-a", local_fs)
    assert str(info.value) == (
        f"destination {str(tmp_path)!r} is an existing folder; end it with '/' to export into it as "
        "ftjob-a.jsonl"
    )


def test_paths_that_name_no_object_are_refused():
    fs = fsspec.filesystem("memory")
    with pytest.raises(ValueError, match=r"^a local destination must be an absolute path, got 'x.jsonl'$"):
        at_path(fsspec.filesystem("file"), "x.jsonl", "file", None, False, "ftjob-a")
    with pytest.raises(ValueError, match=r"^destination path '/x/\.\.' names no object$"):
        at_path(fs, "/x/..", "memory", None, False, "ftjob-a")


def test_a_remote_destination_keeps_its_connection_id_in_the_uri():
    calls: list[tuple[str, str | None]] = []

    def memory(protocol: str, conn_id: str | None) -> Any:
        calls.append((protocol, conn_id))
        return fsspec.filesystem("memory")

    dest = resolve_destination("memory://mem_conn@bucket/runs/", "ftjob-r", memory)
    assert calls == [("memory", "mem_conn")]
    assert (dest.path, dest.protocol, dest.conn_id) == ("/bucket/runs/ftjob-r.jsonl", "memory", "mem_conn")
    assert dest.uri == "memory://mem_conn@bucket/runs/ftjob-r.jsonl"
    assert not dest.local
    assert Destination(dest.fs, "/b/k.jsonl", "s3").uri == "s3://b/k.jsonl"


# -- a filesystem missing on the worker -------------------------------------------------------------

S3_INSTALL = "pip install 'airflow-ftevents[s3]' (the Amazon provider and s3fs)"
GCS_INSTALL = "pip install apache-airflow-providers-google gcsfs"
AZURE_INSTALL = "pip install apache-airflow-providers-microsoft-azure adlfs"


def missing(url: str, scheme: str, install: str | None) -> str:
    head = (
        f"Cannot export to {url}: this worker has no filesystem for {scheme}:// (the Airflow provider that "
        "registers it, or its fsspec library, is not installed). "
    )
    if install is None:
        return head + (
            f"Install the fsspec filesystem for {scheme}:// and the Airflow provider that registers it where "
            "tasks run, or choose another destination"
        )
    return head + f"Install them where tasks run: {install}"


# Airflow's own object storage, as the operator uses it, in a process where s3fs, gcsfs and adlfs
# cannot be imported: with the Amazon provider installed, its get_fs fails on the missing s3fs; without
# it, Airflow has no filesystem registered for s3 at all. Either way the error names what to install.
ATTACH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    for hidden in ("s3fs", "gcsfs", "adlfs"):
        sys.modules[hidden] = None
    from airflow.sdk.io import attach
    from airflow_ftevents.export import ExportDestinationError, resolve_destination

    out = {}
    for url in sys.argv[1:]:
        try:
            resolve_destination(url, "ftjob-x", lambda p, c: attach(p, conn_id=c).fs)
        except ExportDestinationError as exc:
            out[url] = [type(exc.__cause__).__name__, str(exc), exc.retryable]
        else:
            out[url] = None
    print(json.dumps(out))
    """
)


@pytest.mark.timeout(120)
def test_a_scheme_without_its_filesystem_names_what_to_install(tmp_path: Path):
    urls = {
        "s3://aws_conn@bucket/prefix/": ("s3", S3_INSTALL),
        "s3a://bucket/key.jsonl": ("s3a", S3_INSTALL),
        "gs://gcp_conn@bucket/prefix/": ("gs", GCS_INSTALL),
        "gcs://bucket/key.jsonl": ("gcs", GCS_INSTALL),
        "abfs://azure_conn@container/prefix/": ("abfs", AZURE_INSTALL),
        "az://container/key.jsonl": ("az", AZURE_INSTALL),
        "wasb://container/key.jsonl": ("wasb", AZURE_INSTALL),
        "nosuchfs://bucket/key.jsonl": ("nosuchfs", None),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, "-c", ATTACH_SCRIPT, *urls],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert {url: value[1:] for url, value in got.items()} == {
        url: [missing(url, scheme, install), False] for url, (scheme, install) in urls.items()
    }
    # Airflow's refusal (ValueError) or the provider's missing library (ImportError), kept as the cause.
    amazon = importlib.util.find_spec("airflow.providers.amazon") is not None
    assert got["s3://aws_conn@bucket/prefix/"][0] == ("ImportError" if amazon else "ValueError")
    assert {url: value[0] for url, value in got.items() if not url.startswith("s3")} == dict.fromkeys(
        [url for url in urls if not url.startswith("s3")], "ValueError"
    )


def test_fsspec_without_the_library_or_the_protocol_names_what_to_install(monkeypatch):
    """The same errors from plain fsspec (a caller without Airflow): the library or protocol is missing."""
    monkeypatch.setitem(sys.modules, "gcsfs", None)

    def plain(protocol: str, conn_id: str | None) -> Any:
        return fsspec.filesystem(protocol)

    for url, scheme, install in (
        ("gcs://bucket/prefix/", "gcs", GCS_INSTALL),
        ("nosuchfs://bucket/key.jsonl", "nosuchfs", None),
    ):
        with pytest.raises(ExportDestinationError) as info:
            resolve_destination(url, "ftjob-x", plain)
        assert str(info.value) == missing(url, scheme, install)
        assert isinstance(info.value, FineTuneEventsError) and not info.value.retryable
        assert isinstance(info.value.__cause__, (ImportError, ValueError))


def test_other_failures_of_the_filesystem_go_through_unchanged():
    def broken(protocol: str, conn_id: str | None) -> Any:
        raise ValueError("Signer custom requires uri and token")

    with pytest.raises(ValueError, match=r"^Signer custom requires uri and token$"):
        open_filesystem("s3", "aws", broken, "s3://aws@b/k")
    fs = fsspec.filesystem("memory")
    assert open_filesystem("memory", None, lambda p, c: fs, f"memory://{uuid.uuid4().hex}/") is fs

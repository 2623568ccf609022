"""Export to a real S3-compatible server on loopback (moto in server mode) through Airflow's object storage.

The operator resolves ``s3://aws_test@bucket/prefix/`` with the Amazon provider's filesystem for the
``aws_test`` connection, and the bytes are read back with boto3. S3 has no rename: the export is one
staged upload that appears whole on commit, and a failure aborts it (no object, no pending upload).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from task_doubles import FakeTI

from airflow_ftevents.simulator import JobSpec

pytest.importorskip("s3fs")
pytest.importorskip("airflow.providers.amazon")
moto_server = pytest.importorskip("moto.server")

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(120)]

BUCKET = "ft-exports"
CONN = "aws_test"
KEYS = {"aws_access_key_id": "testing-key-id", "aws_secret_access_key": "testing-secret-key"}


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(line(e) for e in events)


@pytest.fixture(scope="module")
def endpoint() -> Any:
    """One moto server for the module: Airflow caches the filesystem of a connection id per process."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch) -> Any:
    """An empty bucket and the ``aws_test`` connection to it; yields a boto3 client to check with."""
    import boto3

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": KEYS["aws_access_key_id"],
                "password": KEYS["aws_secret_access_key"],
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **KEYS)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client: Any) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def pending_uploads(client: Any) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def body(client: Any, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def run(**kwargs: Any) -> Any:
    from airflow_ftevents.operators import FineTuneEventsExportOperator

    op = FineTuneEventsExportOperator(task_id="export", **kwargs)
    op.render_template_fields({"ds_nodash": "20240301"})
    return op.execute({"ti": FakeTI()})


def test_export_to_an_s3_folder_round_trips_exactly(sim, sim_conn, s3):
    sim.add_job(JobSpec(job_id="ftjob-s3", n_events=2500))
    events = sim.events("ftjob-s3")
    destination = f"s3://{CONN}@{BUCKET}/runs/" + "{{ ds_nodash }}/"
    manifest = run(job_id="ftjob-s3", destination=destination, metrics_csv=True)
    data = body(s3, "runs/20240301/ftjob-s3.jsonl")
    assert data == jsonl(events)
    assert manifest == {
        "uri": f"s3://{CONN}@{BUCKET}/runs/20240301/ftjob-s3.jsonl",
        "job_id": "ftjob-s3",
        "count": 2500,
        "first_event_id": events[0]["id"],
        "last_event_id": events[-1]["id"],
        "first_created_at": events[0]["created_at"],
        "last_created_at": events[-1]["created_at"],
        "status": "succeeded",
        "bytes": len(data),
        "metrics_csv": f"s3://{CONN}@{BUCKET}/runs/20240301/ftjob-s3.metrics.csv",
    }
    csv_text = body(s3, "runs/20240301/ftjob-s3.metrics.csv").decode()
    assert csv_text.count("\n") == 1 + sum(1 for e in events if e.get("type") == "metrics")
    assert keys(s3) == ["runs/20240301/ftjob-s3.jsonl", "runs/20240301/ftjob-s3.metrics.csv"]
    assert pending_uploads(s3) == []

    again = run(job_id="ftjob-s3", destination=destination, metrics_csv=True)  # re-run: same bytes
    assert again == manifest
    assert body(s3, "runs/20240301/ftjob-s3.jsonl") == data
    assert keys(s3) == ["runs/20240301/ftjob-s3.jsonl", "runs/20240301/ftjob-s3.metrics.csv"]


def test_export_to_an_s3_object_storage_path(sim, sim_conn, s3):
    from airflow.sdk import ObjectStoragePath

    sim.add_job(JobSpec(job_id="ftjob-osp", n_events=300))
    try:
        dest = ObjectStoragePath(f"s3://{CONN}@{BUCKET}/named/events.jsonl")
    except Exception as exc:  # Airflow 3.1 with universal-pathlib >= 0.3 cannot build one at all
        pytest.skip(f"ObjectStoragePath is unusable in this environment: {exc}")
    manifest = run(job_id="ftjob-osp", destination=dest)
    assert body(s3, "named/events.jsonl") == jsonl(sim.events("ftjob-osp"))
    assert manifest["uri"] == f"s3://{CONN}@{BUCKET}/named/events.jsonl"
    assert keys(s3) == ["named/events.jsonl"]


def test_failure_mid_export_on_s3_leaves_no_object_and_no_pending_upload(sim, sim_conn, s3, monkeypatch):
    from airflow_ftevents.hooks import FineTuneEventsHook

    sim.add_job(JobSpec(job_id="ftjob-broken", n_events=1000))
    original = FineTuneEventsHook.iter_event_blocks

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        for n, block in enumerate(original(self, *args, **kwargs)):
            if n == 5:
                raise ConnectionError("worker lost its network")
            yield block

    monkeypatch.setattr(FineTuneEventsHook, "iter_event_blocks", failing)
    s3.put_object(Bucket=BUCKET, Key="p/ftjob-broken.jsonl", Body=b"previous export\n")
    with pytest.raises(ConnectionError, match="worker lost its network"):
        run(job_id="ftjob-broken", destination=f"s3://{CONN}@{BUCKET}/p/", metrics_csv=True)
    assert keys(s3) == ["p/ftjob-broken.jsonl"]
    assert body(s3, "p/ftjob-broken.jsonl") == b"previous export\n"
    assert pending_uploads(s3) == []


def test_failure_after_parts_were_uploaded_aborts_the_multipart_upload(s3, monkeypatch):
    """More than one part (8 MiB each) went to S3 before the failure: still no object, no upload left."""
    from airflow.sdk.io import attach

    from airflow_ftevents import export

    fs = attach("s3", conn_id=CONN).fs
    dest = export.resolve_destination(f"s3://{CONN}@{BUCKET}/big/", "ftjob-big", lambda p, c: fs)
    chunk = (b'{"object":"fine_tuning.job.event","message":"' + b"x" * 1000 + b'"}\n') * 1024  # ~1 MiB
    from s3fs.core import S3File

    uploaded: list[int] = []
    original_upload = S3File._upload_chunk

    def counting(self: Any, final: bool = False) -> Any:
        uploaded.append(self.buffer.tell())
        return original_upload(self, final)

    monkeypatch.setattr(S3File, "_upload_chunk", counting)

    def blocks() -> Any:
        for _ in range(20):  # ~20 MiB: two full parts reach S3 before the failure
            yield chunk
        raise OSError("the export was interrupted")

    with pytest.raises(OSError, match="interrupted"):
        export.export_events(blocks(), dest, job_id="ftjob-big", status="succeeded")
    assert len([size for size in uploaded if size >= export.STAGED_BLOCK_SIZE]) >= 2
    assert keys(s3) == []
    assert pending_uploads(s3) == []

    size = export.write_bytes_atomic(dest, [chunk] * 9)  # and a multipart upload that succeeds
    assert body(s3, "big/ftjob-big.jsonl") == chunk * 9 and size == len(chunk) * 9
    assert keys(s3) == ["big/ftjob-big.jsonl"] and pending_uploads(s3) == []


def test_a_missing_bucket_is_explained_and_leaves_nothing(s3):
    from airflow.sdk.io import attach

    from airflow_ftevents.export import ExportDestinationError, resolve_destination, write_bytes_atomic

    fs = attach("s3", conn_id=CONN).fs
    dest = resolve_destination(f"s3://{CONN}@no-such-bucket/p/", "ftjob-nb", lambda p, c: fs)
    with pytest.raises(ExportDestinationError) as info:
        write_bytes_atomic(dest, [b'{"a":1}\n'])
    text = str(info.value)
    assert text.startswith(f"Cannot write the export to s3://{CONN}@no-such-bucket/p/ftjob-nb.jsonl: ")
    assert text.endswith(
        f"s3://{CONN}@no-such-bucket/p/ (or its bucket) does not exist and cannot be created: create it or "
        "fix the destination"
    )
    assert not info.value.retryable and isinstance(info.value.__cause__, FileNotFoundError)
    assert "no-such-bucket" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]

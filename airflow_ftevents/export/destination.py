"""Where an export goes: a destination string or a filesystem path resolved into one object to write.

Nothing is written or contacted here except through ``get_fs``, which the caller provides (in Airflow,
the connection's filesystem from ``airflow.sdk.io.attach``); a scheme whose filesystem is missing on
the worker fails with :class:`ExportDestinationError` naming what to install.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_ftevents.errors import ExportDestinationError

LOCAL_PROTOCOLS = frozenset({"file", "local"})

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# What to install for the schemes of the common object stores (the Airflow provider registers the scheme,
# the fsspec library does the work; both must be on the worker).
_S3 = "pip install 'airflow-ftevents[s3]' (the Amazon provider and s3fs)"
_GCS = "pip install apache-airflow-providers-google gcsfs"
_AZURE = "pip install apache-airflow-providers-microsoft-azure adlfs"
INSTALL_FOR_SCHEME = {
    "s3": _S3,
    "s3a": _S3,
    "s3n": _S3,
    "gs": _GCS,
    "gcs": _GCS,
    "abfs": _AZURE,
    "abfss": _AZURE,
    "az": _AZURE,
    "adl": _AZURE,
    "wasb": _AZURE,
    "wasbs": _AZURE,
}
# How Airflow (``airflow.sdk.io``) and fsspec say that no filesystem serves a scheme.
_NO_FILESYSTEM = ("No filesystem registered for scheme", "Protocol not known")


def file_name_for(job_id: str, suffix: str = ".jsonl") -> str:
    """A safe file name for a job id: only letters, digits, ``.``, ``_``, ``-``; never hidden or empty."""
    name = _UNSAFE.sub("_", str(job_id)).strip("._")
    return (name or "job") + suffix


@dataclass(frozen=True)
class Destination:
    """One object to write: the filesystem, the path in its terms, and the URI users see.

    ``uri`` keeps the connection id (``s3://aws_conn@bucket/key``), so it can be handed back to
    ``ObjectStoragePath`` as it is.
    """

    fs: Any
    path: str
    protocol: str
    conn_id: str | None = None

    @property
    def local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def uri(self) -> str:
        if self.local:
            return "file://" + self.path
        user = f"{self.conn_id}@" if self.conn_id else ""
        return f"{self.protocol}://{user}{self.path.lstrip('/')}"

    def sibling(self, name: str) -> Destination:
        """Another object in the same folder (companions, temporary objects)."""
        return Destination(
            self.fs, posixpath.join(posixpath.dirname(self.path), name), self.protocol, self.conn_id
        )


def split_destination(url: str) -> tuple[str, str | None, str, bool]:
    """``(protocol, conn_id, url without the conn id, names a folder)`` of a destination string.

    A bare absolute path is a local file; a trailing ``/`` names a folder. Nothing is contacted.
    """
    text = str(url).strip()
    if not text:
        raise ValueError(
            "destination is empty; give a URL such as file:///data/exports/ or s3://conn@bucket/key"
        )
    folder = text.endswith("/")
    if text.startswith("/"):
        return "file", None, "file://" + text, folder
    parts = urlsplit(text)
    if not parts.scheme or "://" not in text:
        raise ValueError(
            f"destination {text!r} is neither an absolute path nor a URL; use e.g. file:///data/exports/ "
            "or s3://aws_conn_id@bucket/prefix/"
        )
    protocol = parts.scheme.lower()
    conn_id, at, host = parts.netloc.rpartition("@")
    if protocol in LOCAL_PROTOCOLS:
        if host not in ("", "localhost"):
            raise ValueError(f"destination {text!r}: a file URL names no host; use file:///absolute/path")
        return "file", None, "file://" + parts.path, folder
    bare = f"{protocol}://{host}{parts.path}"
    if parts.query:
        bare += "?" + parts.query
    return protocol, (conn_id or None) if at else None, bare, folder


def missing_filesystem_error(destination: str, protocol: str) -> ExportDestinationError:
    """The error for a scheme this worker has no filesystem for, naming what to install."""
    install = INSTALL_FOR_SCHEME.get(protocol)
    return ExportDestinationError(
        f"Cannot export to {destination}: this worker has no filesystem for {protocol}:// "
        "(the Airflow provider that registers it, or its fsspec library, is not installed)",
        hint=(
            f"Install them where tasks run: {install}"
            if install
            else f"Install the fsspec filesystem for {protocol}:// and the Airflow provider that registers "
            "it where tasks run, or choose another destination"
        ),
    )


def open_filesystem(
    protocol: str, conn_id: str | None, get_fs: Callable[[str, str | None], Any], destination: str
) -> Any:
    """``get_fs(protocol, conn_id)``, with a missing filesystem reported as what to install."""
    try:
        return get_fs(protocol, conn_id)
    except ImportError as exc:  # the provider is there, its fsspec library is not
        raise missing_filesystem_error(destination, protocol) from exc
    except ValueError as exc:
        if not str(exc).startswith(_NO_FILESYSTEM):
            raise
        raise missing_filesystem_error(destination, protocol) from exc


def resolve_destination(url: str, job_id: str, get_fs: Callable[[str, str | None], Any]) -> Destination:
    """The object to write for a destination string; a folder gets ``<job_id>.jsonl`` inside it.

    ``get_fs(protocol, conn_id)`` returns the fsspec filesystem (in Airflow, the connection's).
    """
    protocol, conn_id, bare, folder = split_destination(url)
    fs = open_filesystem(protocol, conn_id, get_fs, str(url).strip())
    path = fs._strip_protocol(bare) if protocol not in LOCAL_PROTOCOLS else bare[len("file://") :]
    return at_path(fs, path, protocol, conn_id, folder, job_id)


def at_path(fs: Any, path: str, protocol: str, conn_id: str | None, folder: bool, job_id: str) -> Destination:
    """A destination from a filesystem and a path in its terms (used for ``ObjectStoragePath`` too)."""
    protocol = protocol or "file"
    if protocol in LOCAL_PROTOCOLS:
        protocol = "file"
        if not path.startswith("/"):
            raise ValueError(f"a local destination must be an absolute path, got {path!r}")
        path = os.path.normpath(path)
        if not folder and os.path.isdir(path):
            raise ValueError(
                f"destination {path!r} is an existing folder; end it with '/' to export into it as "
                f"{file_name_for(job_id)}"
            )
    path = path.rstrip("/")
    if folder:
        path = f"{path}/{file_name_for(job_id)}"
    if not path or posixpath.basename(path) in ("", ".", ".."):
        raise ValueError(f"destination path {path!r} names no object")
    return Destination(fs, path, protocol, conn_id)

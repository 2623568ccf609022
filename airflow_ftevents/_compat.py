"""The few Airflow names whose import path differs between the Airflow 3 releases we support."""

from __future__ import annotations

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - older Task SDK
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]

__all__ = ["mask_secret"]

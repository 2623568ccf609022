"""The one exception family of the package.

Every failure a user can meet (an API error that outlasted the retries, a broken page, a malformed body,
a dropped stream) is a :class:`FineTuneEventsError`, so a DAG needs a single ``except``. The attributes
mirror what the API says; the API key is never part of any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TEXT_FIELDS = ("code", "request_id", "hint")


class FineTuneEventsError(Exception):
    """A fine-tuning events call failed; ``str()`` says what went wrong and what to do.

    :param status_code: HTTP status of the failing response, ``None`` when no response came.
    :param code: the API's ``error.code`` (or ``error.type``), when it sent one.
    :param message: the API's ``error.message``, or a description of the failure.
    :param request_id: the ``x-request-id`` header, to quote to the provider's support.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        hint: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        # Used by the retry policy only: whether trying again may help, and the server's requested delay.
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.hint = hint
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = []
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}")
        if self.code:
            parts.append(f"code={self.code}")
        head = f"[{', '.join(parts)}] " if parts else ""
        text = f"{head}{self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.hint:
            text += f". {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The class and attributes as plain JSON (a trigger event carries them to the task)."""
        return {
            "class": type(self).__name__,
            "message": self.message,
            "status_code": self.status_code,
            "code": self.code,
            "request_id": self.request_id,
            "hint": self.hint,
        }

    @staticmethod
    def from_dict(value: Any, message: str) -> FineTuneEventsError:
        """The error ``to_dict`` described; a plain one with ``message`` when ``value`` names no class
        of this family (an older or foreign payload)."""
        cls = _REGISTRY.get(str(value.get("class"))) if isinstance(value, Mapping) else None
        if cls is None:
            return FineTuneEventsError(message)
        status_code = value.get("status_code")
        code, request_id, hint = (None if value.get(k) is None else str(value[k]) for k in _TEXT_FIELDS)
        return cls(
            str(value.get("message") or message),
            status_code=status_code if isinstance(status_code, int) else None,
            code=code,
            request_id=request_id,
            hint=hint,
        )

    def __reduce__(self):  # keep attributes across pickling (Airflow ships exceptions between processes)
        return (
            _rebuild,
            (type(self), self.message, self.status_code, self.code, self.request_id, self.hint),
        )


def _rebuild(cls, message, status_code, code, request_id, hint):
    return cls(message, status_code=status_code, code=code, request_id=request_id, hint=hint)


class FineTuneEventsAPIError(FineTuneEventsError):
    """The API answered with an error status (after retries, where the status is retryable)."""


class FineTuneEventsAuthError(FineTuneEventsAPIError):
    """401/403: the key, organization or project is wrong for this job."""


class FineTuneEventsNotFoundError(FineTuneEventsAPIError):
    """404: no such job for this key (or the wrong ``api`` family / base URL)."""


class FineTuneEventsConnectionError(FineTuneEventsError):
    """No usable response: connection refused or reset, timeout, or a stream dropped too often."""


class FineTuneEventsResponseError(FineTuneEventsError):
    """A success status with a body that is not what the API documents (HTML, truncated JSON, wrong shape)."""


class FineTuneEventsPagingError(FineTuneEventsError):
    """The server's paging cannot be trusted (a repeated cursor, ``has_more`` with an empty page)."""


class InvalidJobIdError(FineTuneEventsError, ValueError):
    """A job id that no escaping can carry in a URL path (``""``, ``"."``, ``".."``).

    A ValueError (it is a bad argument) and a FineTuneEventsError, so the trigger ends with its one
    ``error`` event instead of crashing, like for any other error that no retry can cure.
    """


class ExportDestinationError(FineTuneEventsError, OSError):
    """An export cannot be written where it was asked to go: the message names the destination, the
    cause (an OS error, or a filesystem missing on the worker) and what to do.

    An OSError too, so code that caught the filesystem's own error keeps working. ``retryable`` is
    True only for causes that may pass (a full disk, an I/O error), not for a wrong or forbidden path.
    """


# The classes ``from_dict`` rebuilds, by name: a payload can only name one of these (tests check that
# every subclass defined here is listed).
_REGISTRY: dict[str, type[FineTuneEventsError]] = {
    cls.__name__: cls
    for cls in (
        FineTuneEventsError,
        FineTuneEventsAPIError,
        FineTuneEventsAuthError,
        FineTuneEventsNotFoundError,
        FineTuneEventsConnectionError,
        FineTuneEventsResponseError,
        FineTuneEventsPagingError,
        InvalidJobIdError,
        ExportDestinationError,
    )
}

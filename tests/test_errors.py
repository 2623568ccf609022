"""The exception family (airflow_ftevents.errors): every class survives a trigger event and pickling.

``from_dict`` rebuilds only the classes of its explicit registry; this test finds every subclass defined
in the module by itself, so a new class that is not registered fails here.
"""

from __future__ import annotations

import json
import pickle

import pytest

import airflow_ftevents
from airflow_ftevents import errors
from airflow_ftevents.errors import ExportDestinationError, FineTuneEventsError, InvalidJobIdError


def family() -> list[type[FineTuneEventsError]]:
    found: list[type[FineTuneEventsError]] = []
    pending = [FineTuneEventsError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__ and cls not in found:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


def test_the_family_is_what_the_module_defines():
    assert [cls.__name__ for cls in family()] == [
        "ExportDestinationError",
        "FineTuneEventsAPIError",
        "FineTuneEventsAuthError",
        "FineTuneEventsConnectionError",
        "FineTuneEventsError",
        "FineTuneEventsNotFoundError",
        "FineTuneEventsPagingError",
        "FineTuneEventsResponseError",
        "InvalidJobIdError",
    ]


@pytest.mark.parametrize("cls", family(), ids=lambda cls: cls.__name__)
def test_every_class_round_trips_through_its_json_form(cls):
    error = cls("it failed", status_code=429, code="rate_limit", request_id="req_1", hint="Wait")
    data = json.loads(json.dumps(error.to_dict()))
    assert data == {
        "class": cls.__name__,
        "message": "it failed",
        "status_code": 429,
        "code": "rate_limit",
        "request_id": "req_1",
        "hint": "Wait",
    }
    rebuilt = FineTuneEventsError.from_dict(data, "fallback")
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(error) == "[HTTP 429, code=rate_limit] it failed (request id req_1). Wait"
    assert (rebuilt.status_code, rebuilt.code, rebuilt.request_id, rebuilt.hint) == (
        429,
        "rate_limit",
        "req_1",
        "Wait",
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == str(error)


@pytest.mark.parametrize("cls", family(), ids=lambda cls: cls.__name__)
def test_every_class_round_trips_through_a_trigger_event(cls):
    from airflow_ftevents.triggers import error_from_event, trigger_event_payload

    error = cls("job ftjob-e failed", status_code=None, code="x")
    payload = json.loads(json.dumps(trigger_event_payload("error", str(error), None, error)))
    rebuilt = error_from_event(payload)
    assert type(rebuilt) is cls and str(rebuilt) == str(error) == "[code=x] job ftjob-e failed"


@pytest.mark.parametrize(
    "value",
    [None, "FineTuneEventsError", {}, {"class": "ValueError"}, {"class": "Exception"}, {"class": "_rebuild"}],
)
def test_a_payload_naming_no_class_of_the_family_gives_a_plain_error(value):
    rebuilt = FineTuneEventsError.from_dict(value, "the trigger failed")
    assert type(rebuilt) is FineTuneEventsError and str(rebuilt) == "the trigger failed"


def test_the_bases_callers_catch_are_kept():
    assert issubclass(InvalidJobIdError, ValueError)
    assert issubclass(ExportDestinationError, OSError)
    assert airflow_ftevents.InvalidJobIdError is InvalidJobIdError is errors.InvalidJobIdError
    assert airflow_ftevents.FineTuneEventsError is FineTuneEventsError
    assert set(airflow_ftevents.__all__) == {"FineTuneEventsError", "InvalidJobIdError", "__version__"}

"""The input rules as properties: text and ids, ranges, and times (docs/data-rules.md)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from medrobotics.api.params import FilterId, FilterText
from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import RANGES, READINGS, TelemetryIn
from medrobotics.domain.types import (
    EARLIEST,
    EventDay,
    EventTime,
    Id,
    LongText,
    PlanDay,
    QueryTime,
    Text,
    TimeWindow,
    UtcDateTime,
    plain,
    time_window,
    use_time_window,
)

any_char = st.characters(codec=None, categories=None)
# Texts rich in what matters: controls, lone surrogates, line breaks, astral characters.
texts = st.text(
    any_char | st.sampled_from(["\x00", "\t", "\n", "\r", "\x1f", "\x7f", "\x85", "\ud800"]),
    max_size=30,
)


def accepts(adapter: TypeAdapter[Any], value: Any, *, json_: bool = False) -> bool:
    """Tell whether the type takes `value` (from Python, or from its JSON text)."""
    try:
        if json_:
            adapter.validate_json(json.dumps(value))
        else:
            adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def no_controls(value: str, allowed: str = "") -> bool:
    """The oracle: no character of category Cc (control) or Cs (surrogate), but `allowed`."""
    return all(c in allowed or unicodedata.category(c) not in ("Cc", "Cs") for c in value)


# --- Text and ids -------------------------------------------------------------------------------

TEXT = TypeAdapter(Text)
LONG = TypeAdapter(LongText)
ID = TypeAdapter(Id)


@given(texts)
def test_text_refuses_exactly_the_control_characters(value: str) -> None:
    assert plain(value) == no_controls(value)
    assert accepts(TEXT, value) == no_controls(value)
    assert accepts(LONG, value) == no_controls(value, allowed="\t\n\r")
    for param in (FilterId, FilterText):
        assert accepts(TypeAdapter(param), value) == no_controls(value)


@given(texts)
def test_text_from_json_as_from_python(value: str) -> None:
    # A lone surrogate cannot travel as JSON: its escape is refused as malformed JSON instead.
    if any(unicodedata.category(c) == "Cs" for c in value):
        return
    assert accepts(TEXT, value, json_=True) == accepts(TEXT, value)
    assert accepts(LONG, value, json_=True) == accepts(LONG, value)


@given(st.integers(195, 205), st.sampled_from(["a", "é", "\U0001f600"]))
def test_text_length_counts_characters(length: int, char: str) -> None:
    assert accepts(TEXT, char * length) == (length <= 200)


ID_ORACLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}")


@given(
    texts
    | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@\-]{0,130}\n?\Z")
    | st.sampled_from(["robot-1", "robot-1\n", "a" * 128, "a" * 129, "", "-x"])
)
def test_ids_follow_the_pattern_and_nothing_more(value: str) -> None:
    assert accepts(ID, value) == (ID_ORACLE.fullmatch(value) is not None)
    if ID_ORACLE.fullmatch(value):
        assert plain(value)


@pytest.mark.parametrize(
    ("model", "record", "field"),
    [
        (RobotIn, {"robot_id": "r", "robot_model": "X", "facility_id": "f"}, "robot_model"),
        (RobotIn, {"robot_id": "r", "robot_model": "X", "facility_id": "f"}, "firmware_version"),
        (MaintenanceIn, {"maintenance_id": "m", "robot_id": "r", "maintenance_date": "2024-01-02",
                         "maintenance_type": "routine"}, "technician_name"),
        (OutcomeIn, {"procedure_id": "p", "success_status": "successful"}, "surgeon_notes"),
        (ProcedureIn, {"procedure_id": "p", "robot_id": "r", "procedure_category": "general",
                       "start_time": "2024-01-02T00:00:00Z"}, "surgeon_name"),
        (TelemetryIn, {"procedure_id": "p", "robot_id": "r",
                       "timestamp": "2024-01-02T00:00:00Z"}, "tool_type"),
    ],
)  # fmt: skip
def test_every_entity_applies_the_text_rule(
    model: type[Any], record: dict[str, Any], field: str
) -> None:
    long = field == "surgeon_notes"
    model.model_validate_json(json.dumps(record | {field: "plain text"}))
    for bad in ("a\x00", "\x1b[31m", "a\x7f", "a\x9b"):
        with pytest.raises(ValidationError) as caught:
            model.model_validate_json(json.dumps(record | {field: bad}))
        assert [e["loc"] for e in caught.value.errors()] == [(field,)]
    for spacing in ("two\nlines", "a\ttab", "crlf\r\n"):
        if long:
            model.model_validate_json(json.dumps(record | {field: spacing}))
        else:
            with pytest.raises(ValidationError):
                model.model_validate_json(json.dumps(record | {field: spacing}))


def test_list_items_follow_the_text_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        OutcomeIn.model_validate_json(
            '{"procedure_id": "p", "success_status": "complicated",'
            ' "complications": ["ok", "a\\u0000"]}'
        )
    assert caught.value.errors()[0]["loc"] == ("complications", 1)


# --- Ranges -------------------------------------------------------------------------------------

NUMBERS = st.floats(allow_nan=False) | st.sampled_from(
    [1.7e308, -1.7e308, 0.0, -0.0, 5e-324, 10_080.0, 10_080.01, 1e7, 1e7 + 1, 1e5, 100_001.0]
)
BASE = {"procedure_id": "p", "robot_id": "r", "timestamp": "2024-06-01T00:00:00Z"}


def _edges(low: float, high: float) -> st.SearchStrategy[float]:
    near = [math.nextafter(low, -math.inf), low, high, math.nextafter(high, math.inf)]
    return NUMBERS | st.sampled_from(near) | st.floats(low, high)


@given(st.sampled_from(READINGS).flatmap(lambda n: st.tuples(st.just(n), _edges(*RANGES[n][:2]))))
def test_each_channel_takes_its_range_and_nothing_else(case: tuple[str, float]) -> None:
    name, value = case
    low, high, _ = RANGES[name]
    raw = json.dumps(BASE | {name: value}).encode()  # inf travels as Infinity: refused too
    try:
        TelemetryIn.model_validate_json(raw)
        taken = True
    except ValidationError as exc:
        taken = False
        assert {e["loc"] for e in exc.errors()} == {(name,)}
    assert taken == (math.isfinite(value) and low <= value <= high)


BOUNDED: list[tuple[type[Any], dict[str, Any], str, float, float]] = [
    (MaintenanceIn, {"maintenance_id": "m", "robot_id": "r", "maintenance_date": "2024-01-02",
                     "maintenance_type": "routine"}, "cost", 0, 10_000_000),
    (MaintenanceIn, {"maintenance_id": "m", "robot_id": "r", "maintenance_date": "2024-01-02",
                     "maintenance_type": "routine"}, "downtime_hours", 0, 8_760),
    (OutcomeIn, {"procedure_id": "p", "success_status": "successful"}, "blood_loss_ml", 0, 100_000),
    (OutcomeIn, {"procedure_id": "p", "success_status": "successful"}, "hospital_stay_days", 0,
     3_650),
    (OutcomeIn, {"procedure_id": "p", "success_status": "successful"},
     "patient_satisfaction_score", 1, 10),
    (OutcomeIn, {"procedure_id": "p", "success_status": "successful"}, "recovery_score", 1, 100),
    (ProcedureIn, {"procedure_id": "p", "robot_id": "r", "procedure_category": "general",
                   "start_time": "2024-01-02T00:00:00Z"}, "duration_minutes", 0, 10_080),
    (ProcedureIn, {"procedure_id": "p", "robot_id": "r", "procedure_category": "general",
                   "start_time": "2024-01-02T00:00:00Z"}, "complexity_score", 1, 5),
]  # fmt: skip


@pytest.mark.parametrize(("model", "record", "field", "low", "high"), BOUNDED)
@given(data=st.data())
def test_costs_durations_and_outcomes_take_their_range(
    model: type[Any], record: dict[str, Any], field: str, low: float, high: float, data: Any
) -> None:
    value = data.draw(_edges(low, high))
    try:
        model.model_validate_json(json.dumps(record | {field: value}))
        taken = True
    except ValidationError as exc:
        taken = False
        assert {e["loc"] for e in exc.errors()} == {(field,)}
    assert taken == (math.isfinite(value) and low <= value <= high)


@given(st.integers(0, 9 * 24 * 60 * 60))
def test_derived_duration_obeys_the_bound_a_sent_one_does(seconds: int) -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    record = {
        "procedure_id": "p",
        "robot_id": "r",
        "procedure_category": "general",
        "start_time": start.isoformat(),
        "end_time": (start + timedelta(seconds=seconds)).isoformat(),
    }
    try:
        procedure = ProcedureIn.model_validate_json(json.dumps(record))
    except ValidationError as exc:
        assert seconds > 7 * 24 * 3600
        assert [e["loc"] for e in exc.errors()] == [("end_time",)]
        return
    assert seconds <= 7 * 24 * 3600
    assert procedure.duration_minutes is not None
    assert 0 <= procedure.duration_minutes <= 10_080


def test_end_before_start_names_end_time() -> None:
    record = {
        "procedure_id": "p",
        "robot_id": "r",
        "procedure_category": "general",
        "start_time": "2024-01-02T00:00:00Z",
        "end_time": "2024-01-01T23:59:59Z",
    }
    with pytest.raises(ValidationError) as caught:
        ProcedureIn.model_validate_json(json.dumps(record))
    assert [e["loc"] for e in caught.value.errors()] == [("end_time",)]


# --- Times --------------------------------------------------------------------------------------

OFFSETS = st.sampled_from([None, 0, 330, -300, 14 * 60, -(23 * 60 + 59)])
EVERY_TIME = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))


def text_of(local: datetime, offset: int | None) -> str:
    """Write a local time and its offset (minutes; None: no zone) as ISO 8601."""
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local:%H:%M:%S.%f}"
    if offset is None:
        return text
    sign = "-" if offset < 0 else "+"
    return text + f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


def instant(local: datetime, offset: int | None) -> datetime:
    """The UTC instant a local time and offset name (beyond the calendar for some edges)."""
    return local.replace(tzinfo=UTC) - timedelta(minutes=offset or 0)


@given(EVERY_TIME, OFFSETS)
def test_event_times_lie_in_the_window(local: datetime, offset: int | None) -> None:
    window = time_window()
    try:
        moment = instant(local, offset)
        inside = window.earliest <= moment <= datetime.now(UTC) + window.ahead
    except OverflowError:
        inside = False  # before 0001-01-01 or after 9999-12-31 UTC
    adapter = TypeAdapter(EventTime)
    if inside and abs(moment - datetime.now(UTC) - window.ahead) < timedelta(seconds=5):
        return  # the clock moves while this runs
    try:
        value = adapter.validate_json(json.dumps(text_of(local, offset)))
    except ValidationError:
        assert not inside
        return
    assert inside and value == moment and value.tzinfo is UTC


@given(EVERY_TIME, OFFSETS)
def test_query_times_never_raise_at_the_calendar_edges(local: datetime, offset: int | None) -> None:
    for kind in (UtcDateTime, QueryTime):
        try:
            value = TypeAdapter(kind).validate_strings(text_of(local, offset))
        except ValidationError:
            continue
        assert value.tzinfo is UTC


@given(st.dates(), st.sampled_from([EventDay, PlanDay]))
def test_days_lie_in_their_window(day: date, kind: Any) -> None:
    today = datetime.now(UTC).date()
    latest = today + (timedelta(days=1) if kind is EventDay else timedelta(days=3653))
    if abs((day - latest).days) <= 1:
        return  # the date may turn while this runs
    taken = accepts(TypeAdapter(kind), day.isoformat(), json_=True)
    assert taken == (EARLIEST.date() <= day <= latest)


def test_the_window_is_a_setting() -> None:
    default = time_window()
    try:
        use_time_window(TimeWindow(datetime(2020, 1, 1, tzinfo=UTC), timedelta(hours=1)))
        adapter = TypeAdapter(EventTime)
        with pytest.raises(ValidationError):
            adapter.validate_json('"2019-12-31T23:59:59Z"')
        adapter.validate_json('"2020-01-01T00:00:00Z"')
        soon = datetime.now(UTC) + timedelta(minutes=30)
        adapter.validate_json(json.dumps(soon.isoformat()))
        with pytest.raises(ValidationError):
            adapter.validate_json(json.dumps((soon + timedelta(hours=1)).isoformat()))
    finally:
        use_time_window(default)

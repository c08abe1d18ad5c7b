"""The fast telemetry decoder against TelemetryIn: the same decision and the same row values.

The fast decoder (msgspec) answers "valid, here are the rows" or "not sure" (None), and then
TelemetryIn decides. It must never accept what TelemetryIn refuses, nor give a different row;
and it defers only in the cases named here (`may_defer`), so that it takes the same decision
as the model on everything else a client may send.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from medrobotics.domain import telemetry
from medrobotics.domain.telemetry import (
    RANGES,
    READINGS,
    TelemetryIn,
    fast_batch_rows,
    fast_lines,
    fast_row,
    fast_rows,
)
from medrobotics.domain.types import time_window

ONE: TypeAdapter[TelemetryIn] = TypeAdapter(TelemetryIn)
MANY: TypeAdapter[list[TelemetryIn]] = TypeAdapter(list[TelemetryIn])
Rows = list[tuple[Any, ...]]

# --- What a client might send -------------------------------------------------------------------

# Every character class that matters: controls, lone surrogates, astral, line separators.
any_char = st.characters(codec=None, categories=None)
weird_text = st.text(any_char, max_size=8)

ALNUM = "abcXYZ0189"


@st.composite
def good_ids(draw: st.DrawFn, longest: int = 40) -> str:
    """Ids as robots send them (the id pattern), quick to draw."""
    head = draw(st.sampled_from(ALNUM))
    return head + draw(st.text(ALNUM + "._:@-", max_size=longest - 1))


ids = st.one_of(
    good_ids(),
    st.sampled_from(
        [
            "proc-1",
            "p\n",
            "p\r\n",
            "p\r",
            "\np",
            "p\n\n",
            "a" * 127 + "\n",
            "a" * 128 + "\n",
            "",
            " p",
            "p ",
            "p\t",
            "-p",
            "a" * 128,
            "a" * 129,
            "pü",
            "p\x00",
            "p\x7f",
            "p\x85",
            "p\u2028",
            "p\ufeff",
            "\U0001f916",
        ]
    ),
    weird_text,
    st.integers(-3, 3),
    st.none(),
)


def _edge_floats(low: float, high: float) -> st.SearchStrategy[Any]:
    return st.sampled_from(
        [
            low,
            high,
            math.nextafter(low, -math.inf),
            math.nextafter(high, math.inf),
            0.0,
            -0.0,
            (low + high) / 2,
            int(low),
            int(high),
            int(high) + 1,
            1.7e308,
            -1.7e308,
            5e-324,
            10**400,
            math.inf,
            -math.inf,
            math.nan,
        ]
    )


def readings(name: str) -> st.SearchStrategy[Any]:
    low, high, _ = RANGES[name]
    return st.one_of(
        _edge_floats(low, high),
        st.floats(min_value=low, max_value=high),
        st.floats(allow_nan=False),
        st.integers(min_value=-(10**6), max_value=10**6),
        st.none(),
        st.booleans(),
        st.sampled_from(["1.0", "NaN", [], {}]),
    )


def _fraction(digits: int, micro: int) -> str:
    if digits == 0:
        return ""
    return "." + f"{micro:06d}{'9876543'}"[:digits]


@st.composite
def times(draw: st.DrawFn, inside: bool = False) -> Any:
    """ISO 8601 texts at the calendar's edges and around the accepted window (or inside it)."""
    window = time_window()
    now = datetime.now(UTC)
    inside_window = st.datetimes(
        min_value=window.earliest.replace(tzinfo=None),
        max_value=(now + window.ahead - timedelta(seconds=10)).replace(tzinfo=None),
        timezones=st.just(UTC),
    )
    edges = st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(1, 1, 1, 4, 59, 59, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(9999, 12, 31, 19, 0, tzinfo=UTC),
            window.earliest,
            window.earliest - timedelta(microseconds=1),
            window.earliest - timedelta(seconds=1),
            window.earliest + timedelta(microseconds=1),
            # A margin of seconds on the moving edge: `now` moves while an example runs.
            now + window.ahead - timedelta(seconds=10),
            now + window.ahead + timedelta(seconds=10),
            now + timedelta(days=400),
            now,
        ]
    )
    anywhere = st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
    )
    instant = draw(inside_window if inside else edges | anywhere | inside_window)
    offset = draw(st.sampled_from([0, 0, 5 * 60, -5 * 60, 14 * 60, -(23 * 60 + 59), None]))
    style = draw(st.sampled_from(["Z", "z", "+00:00", "+hh:mm", "+hhmm", ""]))
    sep = draw(st.sampled_from(["T", "T", "t", " "] if inside else ["T", "t", " ", "_"]))
    digits = draw(st.sampled_from([0, 1, 3, 6] if inside else [0, 1, 3, 6, 7, 9, 12]))
    if style == "":
        offset = None  # a naive text is read as UTC: written as the instant itself
    try:
        local = instant if offset is None else instant + timedelta(minutes=offset)
        local.replace(tzinfo=None)
    except OverflowError:
        local, offset = instant, 0
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        + _fraction(digits, local.microsecond)
    )
    if offset is None or style == "":
        return text  # naive: UTC
    if offset == 0 and style in ("Z", "z", "+00:00"):
        return text + style
    sign = "-" if offset < 0 else "+"
    hh, mm = divmod(abs(offset), 60)
    return text + (f"{sign}{hh:02d}{mm:02d}" if style == "+hhmm" else f"{sign}{hh:02d}:{mm:02d}")


timestamps = st.one_of(
    times(),
    st.sampled_from(
        [
            "2025-01-01",
            "2025-01-01T00:00",
            "2025-01-01T00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2024-02-29T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T23:59:60Z",
            "2025-01-01T00:00:00-00:00",
            "2025-01-01T00:00:00+23:59",
            "2025-01-01T00:00:00+24:00",
            "2025-01-01T00:00:00+05",
            "2025-01-01T00:00:00.Z",
            "2025-01-01T00:00:00,5Z",
            "2025-01-01T00:00:00.123456789012Z",
            "20250101T000000Z",
            "2025-001T00:00:00Z",
            "+02025-01-01T00:00:00Z",
            " 2025-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z\n",
            "24:00",
            "",
            "x",
        ]
    ),
    st.integers(0, 2_000_000_000),
    st.none(),
    weird_text,
)

tool_types = st.one_of(
    st.none(),
    st.text(any_char, max_size=12),
    st.sampled_from(
        [
            "Grasper",
            "a" * 200,
            "a" * 201,
            "\U0001f600" * 200,
            "\U0001f600" * 201,
            "tab\there",
            "line\n",
            "nul\x00",
            "del\x7f",
            "c1\x85",
            "\ud800",
            "\udfff x",
            "\ufeff\u2028\u202e",
            "\uffff",
        ]
    ),
    st.integers(0, 3),
)

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "procedure_id": ids,
    "robot_id": ids,
    "timestamp": timestamps,
    "tool_type": tool_types,
    **{name: readings(name) for name in READINGS},
}
REQUIRED = ("procedure_id", "robot_id", "timestamp")


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records a robot sends every day (any field may be left out but the three keys)."""
    record: dict[str, Any] = {
        "procedure_id": draw(good_ids()),
        "robot_id": draw(good_ids()),
        "timestamp": draw(times(inside=True)),
    }
    if draw(st.booleans()):
        record["tool_type"] = draw(
            st.none() | st.text(st.characters(categories=["L", "N", "P", "Zs"]), max_size=30)
        )
    for name in READINGS:
        if draw(st.integers(0, 3)):
            low, high, _ = RANGES[name]
            record[name] = draw(st.none() | st.floats(min_value=low, max_value=high))
    return record


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with up to three fields changed to edge values, left out, or added."""
    record = draw(valid_records())
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(list(FIELDS)))
        if draw(st.integers(0, 5)) == 0:
            record.pop(name, None)
        else:
            record[name] = draw(FIELDS[name])
    if draw(st.integers(0, 15)) == 0:
        record[draw(st.sampled_from(["extra", "Timestamp", "type", ""]))] = 1
    return record


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON as a client may write it: escapes (`\\ud800`) or raw bytes (then not UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Where the fast decoder leaves a record the model takes to the model: a time finer than the
# microsecond, which msgspec would round and the model truncates (so a sample gets one stored
# time); and three forms the model's parser reads and msgspec's (RFC 3339) does not: a date
# and time joined by `_`, a time without seconds, a comma before the fraction.
_DEFERRED = re.compile(r"\.\d{7}|^\d{4}-\d\d-\d\d_|^\d{4}-\d\d-\d\d.\d\d:\d\d(?!:)|,\d")


def may_defer(batch: list[dict[str, Any]]) -> bool:
    """Tell whether the fast decoder may leave `batch` to the model though the model takes it."""
    return any(
        isinstance(r.get("timestamp"), str) and _DEFERRED.search(r["timestamp"]) for r in batch
    )


# --- The two decoders ---------------------------------------------------------------------------


def canon(rows: Rows) -> list[tuple[Any, ...]]:
    """Rows with each value's type, floats by repr (-0.0 is not 0.0), times as ISO text."""

    def one(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, float):
            return repr(v)
        return v

    return [tuple((type(v).__name__, one(v)) for v in row) for row in rows]


def slow(adapter: TypeAdapter[Any], raw: bytes) -> Rows | None:
    """The model's rows, or None when it refuses (any other exception fails the test)."""
    try:
        value = adapter.validate_json(raw)
    except ValidationError:
        return None
    return [s.row() for s in value] if isinstance(value, list) else [value.row()]


def agree(fast: Rows | None, reference: Rows | None, *, defer: bool = False) -> None:
    """The same decision and the same rows; a deferral (None) only where `defer` allows."""
    if reference is None:
        assert fast is None, "the fast decoder accepted what the model refuses"
        event("both refused")
        return
    if fast is None:
        assert defer, "the fast decoder deferred a record the model accepts (not a known case)"
        event("fast decoder deferred (a known case)")
        return
    event("both accepted")
    assert canon(fast) == canon(reference)
    for row in fast:
        assert row[2].tzinfo is UTC


@given(records(), st.booleans())
def test_one_sample(record: dict[str, Any], ascii_only: bool) -> None:
    raw = encode(record, ascii_only)
    note(f"body: {raw!r}")
    reference = slow(ONE, raw)
    defer = may_defer([record])
    agree(fast_rows(raw), reference, defer=defer)
    one = fast_row(raw)
    agree(None if one is None else [one], reference, defer=defer)


@given(st.lists(records(), max_size=4), st.booleans())
def test_array_batch_and_lines(batch: list[dict[str, Any]], ascii_only: bool) -> None:
    raw = encode(batch, ascii_only)
    note(f"body: {raw!r}")
    reference = slow(MANY, raw)
    defer = may_defer(batch)
    agree(fast_rows(raw), reference, defer=defer)
    wrapped = encode({"type": "telemetry", "records": batch}, ascii_only)
    agree(fast_batch_rows(wrapped), reference, defer=defer)
    lines = [encode(r, ascii_only) for r in batch]
    per_line = [slow(ONE, line) for line in lines]
    joined = None if any(r is None for r in per_line) else [r[0] for r in per_line if r]
    agree(fast_lines(b"\n".join(lines)), joined, defer=defer)


@given(records(), st.sampled_from(list(FIELDS)), st.data(), st.booleans())
def test_a_repeated_key(
    record: dict[str, Any], name: str, data: st.DataObject, first: bool
) -> None:
    # JSON allows a key twice; both decoders keep the last value. msgspec also checks the
    # earlier one, so it may defer where the model takes the last: never the other way.
    other = data.draw(FIELDS[name])
    pairs = [(k, v) for k, v in record.items() if k != name]
    twice = [(name, other), (name, record[name])] if name in record else [(name, other)] * 2
    pairs[len(pairs) // 2 : len(pairs) // 2] = twice if first else twice[::-1]
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    raw = text.encode("utf-8", "surrogatepass")
    reference = slow(ONE, raw)
    agree(fast_rows(raw), reference, defer=True)
    one = fast_row(raw)
    agree(None if one is None else [one], reference, defer=True)


FRAMES = [b"", b" ", b"\n", b"\t", b"\r\n", b"\xef\xbb\xbf", b"\x00", b"[", b"x", b"{}", b","]


@given(records(), st.sampled_from(FRAMES), st.sampled_from(FRAMES))
def test_what_surrounds_the_record(record: dict[str, Any], before: bytes, after: bytes) -> None:
    # Whitespace around a body is JSON; a byte-order mark, trailing bytes or a second value
    # are not: the same decision either way.
    raw = before + encode(record, False) + after
    reference = slow(ONE, raw)
    agree(fast_rows(raw), reference, defer=may_defer([record]))


# --- Plainly valid records take the fast path ----------------------------------------------------


@given(st.lists(valid_records(), min_size=1, max_size=4))
def test_plainly_valid_records_are_taken_by_the_fast_decoder(batch: list[dict[str, Any]]) -> None:
    raw = encode(batch, False)
    fast = fast_rows(raw)
    assert fast is not None
    assert canon(fast) == canon(slow(MANY, raw) or [])


# --- Cases found once, kept ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"procedure_id":"p","robot_id":"r","timestamp":"2025-01-01T00:00:00Z","tool_type":"\xed\xa0\x80"}',
        b'{"procedure_id":"p","robot_id":"r","timestamp":"2025-01-01T00:00:00Z","tool_type":"\xff"}',
        b'{"procedure_id":"p","robot_id":"r","timestamp":"0001-01-01T00:00:00+05:00"}',
        b'{"procedure_id":"p","robot_id":"r","timestamp":"9999-12-31T23:00:00-05:00"}',
        b'{"procedure_id":"p","robot_id":"r","timestamp":"2025-01-01T00:00:00Z","tool_type":"a\\u0000"}',
        b'{"procedure_id":"p","robot_id":"r","timestamp":"2025-01-01T00:00:00Z","arm_position_x":1.7e308}',
    ],
)
def test_refused_by_both_without_an_exception(raw: bytes) -> None:
    assert fast_rows(raw) is None and fast_row(raw) is None and fast_lines(raw) is None
    assert slow(ONE, raw) is None


def test_fractions_finer_than_a_microsecond_are_left_to_the_model() -> None:
    # msgspec would round them, the model truncates: the sample must get one time only.
    raw = json.dumps(
        {"procedure_id": "p", "robot_id": "r", "timestamp": "2025-01-01T00:00:00.9999996+05:00"}
    ).encode()
    assert fast_rows(raw) is None
    assert slow(ONE, raw) == [
        ("p", "r", datetime(2024, 12, 31, 19, 0, 0, 999999, tzinfo=UTC), *[None] * 14)
    ]


def test_fast_decoder_holds_the_model_ranges() -> None:
    schema = TelemetryIn.model_json_schema()["properties"]
    info = msgspec.inspect.type_info(telemetry._Sample)
    assert isinstance(info, msgspec.inspect.StructType)
    fast = {f.name: f.type for f in info.fields}
    for name in READINGS:
        low, high, _ = RANGES[name]
        number = schema[name]["anyOf"][0]
        assert (number["minimum"], number["maximum"]) == (low, high), name
        kind = fast[name]
        assert isinstance(kind, msgspec.inspect.UnionType)
        real = kind.types[0]
        assert isinstance(real, msgspec.inspect.FloatType)
        assert (real.ge, real.le) == (low, high), name

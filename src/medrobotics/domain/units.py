"""The precision of the figures the platform computes: each sum and mean to its unit's.

Floats added in another order (another database, another plan, another page of roll-ups)
differ in their last bits, and a total of 14.799999999999999 hours is noise, not data. Every
sum and mean an answer carries is rounded to the decimals its unit can mean, the same on
both databases; stored values (a visit's cost, a sample's reading) are returned as sent.
"""

from __future__ import annotations

from typing import overload

USD = 2
"""Costs: cents."""
HOURS = 3
"""Hours (in use, downtime, a window's length): 3.6 seconds."""
MINUTES = 2
"""Durations in minutes: 0.6 seconds, as a duration derived from start and end is kept."""
DAYS = 2
"""Hospital stays."""
ML = 1
"""Blood loss."""
SCORE = 2
"""Complexity (1-5) and patient satisfaction (1-10)."""
SHARE = 4
"""Rates and utilization, as fractions: a hundredth of a percent."""
READING = 3
"""Telemetry channel means (mm, degrees, N, %, °C, W): a thousandth of the unit."""


@overload
def rounded(value: float, places: int) -> float: ...
@overload
def rounded(value: float | None, places: int) -> float | None: ...
def rounded(value: float | None, places: int) -> float | None:
    """Return `value` rounded to `places` decimals; None stays None."""
    if value is None:
        return None
    # + 0.0 turns a negative zero (a tiny negative rounded away) into 0.0.
    return round(value, places) + 0.0

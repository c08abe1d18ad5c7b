"""Hypothesis profiles: a fixed, derandomized run in CI; a quick random one elsewhere."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Moderate counts keep each property to a second or two. CI runs the same examples every time
# (derandomize), so a failure there reproduces; locally each run explores new ones.
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
# HYPOTHESIS_PROFILE=deep: a long search, after changing a rule or the fast decoder.
settings.register_profile("deep", max_examples=3000, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

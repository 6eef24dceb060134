"""Test-suite settings shared by every test package.

Hypothesis runs derandomized (a fixed seed per test) so a CI run is reproducible: a property that
fails, fails every time and on every machine, and a green run stays green. ``HYPOTHESIS_PROFILE=explore``
turns the randomness back on for a local bug hunt.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

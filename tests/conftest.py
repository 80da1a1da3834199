"""Shared test configuration: hypothesis profiles and the location of the real preference data."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# "fast" (default) keeps `pytest` under 10 minutes on 2 cores; "ci" searches harder (HYPOTHESIS_PROFILE=ci).
settings.register_profile(
    "fast", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "ci", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

torch.set_num_threads(1)  # tiny tensors: one thread is faster and leaves a core for the rest

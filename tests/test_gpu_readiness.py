"""GPU-readiness helpers that run on the CPU: distributed timeout parsing."""

import pytest

from dpocheck.errors import InputError
from dpocheck.llm.distributed import dist_timeout_seconds


def test_dist_timeout_default_and_override(monkeypatch):
    monkeypatch.delenv("DPOCHECK_DIST_TIMEOUT", raising=False)
    assert dist_timeout_seconds() == 600.0
    monkeypatch.setenv("DPOCHECK_DIST_TIMEOUT", "42.5")
    assert dist_timeout_seconds() == 42.5


@pytest.mark.parametrize("raw", ["abc", "0", "-3", "inf", "nan"])
def test_dist_timeout_rejects_bad_values(monkeypatch, raw):
    monkeypatch.setenv("DPOCHECK_DIST_TIMEOUT", raw)
    with pytest.raises(InputError, match="DPOCHECK_DIST_TIMEOUT"):
        dist_timeout_seconds()

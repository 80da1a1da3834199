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


def _worker(rank: int, port: int, results) -> None:
    import os

    import torch.distributed as dist

    from dpocheck.llm.distributed import raise_if_any_rank_failed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        raise_if_any_rank_failed(ValueError("bad record 3") if rank == 1 else None)
        results[rank] = "no error"
    except InputError as exc:
        results[rank] = str(exc)
    finally:
        dist.destroy_process_group()


def test_failure_on_one_rank_stops_all_with_same_message():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
    assert results[0] == results[1] == "rank 1 failed: ValueError: bad record 3"


def test_raise_if_any_rank_failed_single_process():
    from dpocheck.llm.distributed import raise_if_any_rank_failed

    raise_if_any_rank_failed(None)
    with pytest.raises(ValueError, match="x"):
        raise_if_any_rank_failed(ValueError("x"))

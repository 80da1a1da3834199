"""The LLM sub-commands of ``dpocheck``; each module's ``register(subparsers)`` adds its commands.

- ``args`` — the options every LLM command shares (data reading, model loading), one definition each;
- ``score`` — ``score`` (log-probs of preference pairs) and ``sample`` (on-policy samples);
- ``analysis`` — ``violations`` (C2, C3, C4, C8 on scored pairs) and ``reward`` (Δr* from a reward model);
- ``train`` — ``train`` and ``train-sweep`` (the optional ``train`` extra, imported inside the handlers).

Handlers import torch, transformers and TRL lazily, so ``dpocheck --help`` stays fast; errors go through the one
error policy of :mod:`dpocheck.cli` (exit 2 for bad input, one line).
"""

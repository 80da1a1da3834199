"""LLM-scale checks: the claims of PAPER.md on real models and real preference data (C2, C3, C4, C8, C10).

What lives where (bottom to top; a module imports only from its own layer or the layers above it in this list, and
from ``dpocheck.theory``, ``dpocheck.errors``, ``dpocheck._io``; ``tests/test_structure.py`` checks it):

1. ``manifest`` — the one output protocol of every long job (create, refuse, resume, fail; one manifest layout);
2. ``data/`` — :class:`~dpocheck.llm.data.PreferencePair` and the readers behind ``load_pairs``;
3. ``models`` — loading local models (HF folders, GGUF), their config and tokenizer, the pad token, toy models;
4. ``preflight`` — checks before any model loads (the model path holds a model, ``--out`` can be written);
5. ``scoring/`` — settings and score rows, rendering, tokenising, the log-prob kernels, ``dpocheck score``;
6. ``analysis/`` — reading score folders, the C2/C3/C4/C8 computation, typed results, reports (``violations``);
7. ``generation/`` — ``sample``, ``reward``, ``onpolicy``: on-policy samples, Δr* from a reward model, both in one run;
8. ``train/`` — DPO-family training on TRL (optional ``train`` extra) and the declared sweeps;
9. ``cli/`` — the sub-commands.

Importing this package is cheap: transformers / torch are imported lazily by the modules that need them.
"""

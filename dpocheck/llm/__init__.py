"""LLM-scale checks: the claims of PAPER.md on real models and real preference data (C2, C3, C4, C8, C10).

What lives where (data flows top to bottom; imports only go down the list or to ``dpocheck.theory``):

- ``types`` — PreferencePair, the record every reader yields; ``data`` — ``load_pairs``, the readers' entry point.
- ``render`` — the one way a pair becomes text (plain HH-style or chat template), for scoring, rewards, sampling.
- ``encode`` — tokens with the prompt/response boundary, truncation, batch and shard plans.
- ``kernels`` — log-prob kernels (packed, cache-shared, unshared); ``runner`` — sharded resumable ``score``;
  ``distributed`` — torch.distributed helpers; ``manifest`` — the one writer/reader of run manifests;
  ``precision`` — the fp32 check of bf16/fp16 scores (``score --check-fp32``).
- ``preflight`` — checks before any model loads (the model path holds a model, ``--out`` can be written).
- ``models`` — loading local models (HF folders, GGUF) and toy models; ``reward`` — Δr* from a reward model;
  ``sample`` — on-policy samples.
- ``scores`` — reading/validating score folders (ScoreTable, read_scores, Δr* source); ``results`` — the
  C2/C3/C4/C8 computation; ``report`` — its Markdown, JSON and Fig. 1; ``analysis`` re-exports all three.
- ``cli_model`` (``score``, ``sample``) and ``cli_data`` (``violations``, ``reward``) — the sub-commands.

Importing this package is cheap: transformers / torch are imported lazily by the modules that need them.
"""

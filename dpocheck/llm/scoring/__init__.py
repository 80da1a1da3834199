"""Sequence log-probabilities of preference pairs under a causal LM: the δ_ref / δ_θ behind C2, C3, C4, C8, C10.

What lives where (imports go down the list):

- ``settings`` — :class:`ScoreSettings`, the score row (``ROW_KEYS``), the two log-prob conventions and the one
  context rule of every command that reads a model (``cap_max_length``);
- ``render`` — the one way a pair becomes text (plain HH-style or the chat template), for scoring, rewards and
  sampling alike;
- ``encode`` — tokens with the prompt/response boundary, truncation, the batch and shard plans; text the tokenizer
  cannot take is a bad record (``untokenizable_text``);
- ``hidden`` — float64 sums of the hidden states at scored positions and the CHES fields of a row (PAPER §6);
- ``account`` — the one account of records read, skipped and truncated (screen line and manifest counts) that
  ``score`` and ``train`` give alike;
- ``kernels`` — the log-prob kernels (packed, cache-shared, unshared), output head applied at scored positions only;
- ``distributed`` — torch.distributed helpers (no-ops without ``torchrun``);
- ``runner`` — ``dpocheck score``: sharded, resumable scoring into a folder through the output protocol;
- ``precision`` — ``score --check-fp32``: how far bf16/fp16 scores are from an fp32 rescoring.

Importing this package is cheap: torch is imported by the functions that need it.
"""

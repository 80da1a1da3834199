"""Deterministic toy preference records for the training tests (plain ``prompt``/``chosen``/``rejected`` rows)."""

from __future__ import annotations

WORDS = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()


def toy_records(n: int, *, varied: bool = True, scores: bool = False) -> list[dict]:
    """``n`` records built from :data:`WORDS`. ``varied``: prompts of 2–6 words and responses of 1–4 words (else
    prompts of 3 words and responses of 1–3), so pairs differ in length and tokens; ``scores``: with
    ``score_chosen``/``score_rejected`` fields (a Δr* source)."""
    period = 4 if varied else 3
    rows = []
    for i in range(n):
        words = " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(2 + (i * 7) % 5 if varied else 3))
        chosen = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % period))
        rejected = " ".join(WORDS[(2 * i + j + 5) % len(WORDS)] for j in range(1 + (i * 5) % period))
        row = {"prompt": f"Question: {words}?", "chosen": f" {chosen}.", "rejected": f" {rejected}!"}
        if scores:
            row.update(score_chosen=1.0 + (i % 3), score_rejected=0.5)
        rows.append(row)
    return rows

"""dpocheck: checks, in closed form and at LLM scale, when DPO is equivalent to RLHF (PAPER.md C1–C10).

Parts, imported one way (theory → sims / llm / proofs_check → figures; :mod:`dpocheck.cli` on top):
:mod:`dpocheck.theory` (closed forms on tabular bandits and pairs, the loss registry),
:mod:`dpocheck.sims` (vectorised training dynamics), :mod:`dpocheck.proofs_check` (a verdict per claim),
:mod:`dpocheck.figures` (declared experiments → tables → plots, ``dpocheck demo``), :mod:`dpocheck.llm`
(log-probs of real models on real data, rewards, sampling, violations; :mod:`dpocheck.llm.train` trains through
TRL); :mod:`dpocheck.errors` and :mod:`dpocheck._io` (error types, atomic writes) serve them all.
"""

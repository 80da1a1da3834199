"""Models other than the scored policy at work: on-policy samples and reward-model gaps (the inputs of C2 on
on-policy data).

What lives where:

- ``sample`` — ``dpocheck sample``: K seeded responses per prompt (batched ``generate`` calls, left-padded) with
  their log-probs (a forward pass under the sampler), and preference pairs formed from them (``all`` or
  ``best-worst`` by a reward field);
- ``reward`` — ``dpocheck reward``: Δr* = r(y_w) − r(y_l) from a local sequence-classification reward model, on the
  same rendered text the scorer reads; and r(x, y) of single samples;
- ``onpolicy`` — ``dpocheck onpolicy``: samples → rewards → best-vs-worst pairs with the reward model's Δr* →
  reference scores → violations, one resumable run (the paper's E1 setting).

All write through the output protocol of :mod:`dpocheck.llm.manifest` (``OUT.manifest.json`` or
``DIR/manifest.json``, ``--resume``).
"""

"""LLM-scale checks: the claims of PAPER.md on real models and real preference data (C2, C3, C4, C8, C10).

Importing this package is cheap: transformers / torch are imported lazily by the modules that need them.
"""

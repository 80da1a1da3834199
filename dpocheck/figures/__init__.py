"""Experiments as data: each module is a setting, a declared sweep, a computation writing tidy
tables and a plot that reads only those tables. :mod:`dpocheck.figures.registry` lists and runs them;
:mod:`dpocheck.figures.demo` builds the `dpocheck demo` report.

Experiments: e1_violation_map (C1, C2), e2_misaligned_reference (C3, C4, C8, C10), e3_gradient_vanishing
(C4), e4_soft_margin (C7), e5_gamma_sweep (C8), e6_ecpoc (C5, C8, C9), e7_easy_margin (C8, C10).
"""

from .registry import (
    EXPERIMENT_MODULES,
    FORMATS,
    SIZES,
    Experiment,
    experiments,
    get_experiment,
    run_all,
    run_experiment,
)

__all__ = [
    "EXPERIMENT_MODULES",
    "FORMATS",
    "SIZES",
    "Experiment",
    "experiments",
    "get_experiment",
    "run_all",
    "run_experiment",
]

"""The test suite's hypothesis strategies: the package's one library, :mod:`dpocheck.proofs_check.strategies`."""

from dpocheck.proofs_check.strategies import (  # noqa: F401
    BETA_MAX,
    BETA_MIN,
    DELTA_BOUND,
    LOG_PROB_MIN,
    bandits,
    betas,
    finite_floats,
    float_arrays,
    log_policy_tables,
    log_probs,
    logit_tables,
    mean_log_probs,
    pair_arrays,
    pair_indices,
    single_pair_bandits,
)

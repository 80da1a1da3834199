"""Training dynamics on tabular bandits (C3, C4, C5, C8, C10): many instances and seeds trained at once, tidy tables.

See :mod:`dpocheck.sims.trainer` (vectorised gradient descent / Adam on every loss of the loss registry,
dpocheck.theory.LOSSES),
:mod:`dpocheck.sims.batch` (batches of bandits and their constructors), :mod:`dpocheck.sims.reference`
(the misaligned-reference construction of E2) and :mod:`dpocheck.sims.tables` (tidy CSV tables).
"""

from .batch import (
    BanditBatch,
    all_pairs_by_reward,
    batched_log_softmax,
    gather_pairs,
    gaussian_batch,
    one_pair_per_context,
    sample_bt_repeats,
    uniform_log_policy,
)
from .reference import MisalignedReference, fit_reference, flip_labels, misaligned_reference_batch
from .tables import (
    read_table,
    table_columns,
    trajectory_columns,
    trajectory_rows,
    write_table,
    write_text_atomic,
)
from .trainer import (
    METRIC_COLUMNS,
    OPTIMIZERS,
    REFERENCE_POINTS,
    LossConfig,
    PairLoss,
    Trajectory,
    ecpoc_log_policy,
    gradient_flow_time,
    kl_divergence,
    policy_metrics,
    reference_point_metrics,
    rlhf_optimum_log_policy,
    train,
)

__all__ = [
    "METRIC_COLUMNS",
    "OPTIMIZERS",
    "REFERENCE_POINTS",
    "BanditBatch",
    "LossConfig",
    "MisalignedReference",
    "PairLoss",
    "Trajectory",
    "all_pairs_by_reward",
    "batched_log_softmax",
    "ecpoc_log_policy",
    "fit_reference",
    "flip_labels",
    "gather_pairs",
    "gaussian_batch",
    "gradient_flow_time",
    "kl_divergence",
    "misaligned_reference_batch",
    "one_pair_per_context",
    "policy_metrics",
    "read_table",
    "reference_point_metrics",
    "rlhf_optimum_log_policy",
    "sample_bt_repeats",
    "table_columns",
    "train",
    "trajectory_columns",
    "trajectory_rows",
    "uniform_log_policy",
    "write_table",
    "write_text_atomic",
]

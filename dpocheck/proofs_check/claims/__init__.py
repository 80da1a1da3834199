"""The checks of the paper's claims, one module per claim family (PAPER.md C1–C10); :mod:`..registry` lists them.

- :mod:`.c1_c2_violation` — C1 the RLHF optimum and key identity; C2 the violation condition, β-monotonicity,
  Chen et al.'s equivalence, the real-data rate.
- :mod:`.c3_c4_undesirable` — C3 the undesirable space U; C4 the DPO gradient, its vanishing, the escape time.
- :mod:`.c5_c6_equivalence` — C5 population equivalence and the ordered pair; C6 shift invariance.
- :mod:`.c7_soft_margin` — C7 the hinge limit and the finite-β bound.
- :mod:`.c8_cpo_margin` — C8 the constrained-preference-optimization objective, FOC, margin stationary point, Prop. H.2.
- :mod:`.c8_thm49` — C8 γ* (Eq. 27), Thm 4.9, the log-space margin.
- :mod:`.c9_ecpoc` — C9 E-CPOC, the bridge, the released branches as practical forms.
- :mod:`.c10_released` — C10 the released code's losses (reproduction, `easy` margin sign, targets).
- :mod:`.s6_losses` — PAPER §6's losses against likelihood displacement (DPOP, DPO + NLL): reduction to DPO, DPOP = DPO
  on non-displaced pairs, exact derivatives, no stationary point with hard labels.
- :mod:`.s6_stationary` — their population stationary points relative to δ* and U.
- :mod:`._shared` — sympy symbols and domains, population losses, offsets, solver wrapper.
"""

from ._shared import branch_offsets, population_loss, tangent_negative_definite
from .c1_c2_violation import (
    check_beta_monotone,
    check_chen_equivalence,
    check_key_identity,
    check_real_data_rate,
    check_rlhf_optimum,
    check_violation_condition,
)
from .c3_c4_undesirable import (
    check_dpo_gradient,
    check_escape_time,
    check_gradient_shrinks,
    check_gradient_vanishing,
    check_u_loss,
    check_u_nonempty,
)
from .c5_c6_equivalence import check_ordered_pair, check_population_equivalence, check_shift_invariance
from .c7_soft_margin import check_hinge_limit, check_soft_margin_bound
from .c8_cpo_margin import check_cpo_approximation, check_cpo_foc, check_cpo_paper_stationary, check_cpo_unbounded
from .c8_thm49 import check_gamma_star, check_log_space_margin, check_thm49_approximate, check_thm49_exact
from .c9_ecpoc import check_ecpoc, check_ecpoc_bridge, check_practical_forms
from .c10_released import check_easy_margin_sign, check_released_reproduction, check_released_targets
from .s6_losses import (
    check_dpo_nll_alpha_zero,
    check_dpo_nll_gradient,
    check_dpop_gradient,
    check_dpop_lambda_zero,
    check_dpop_non_displaced,
    check_no_stationary_point_hard_labels,
)
from .s6_stationary import check_dpo_nll_population, check_dpop_population, check_dpop_undesirable_space

__all__ = [
    "branch_offsets",
    "check_beta_monotone",
    "check_chen_equivalence",
    "check_cpo_approximation",
    "check_cpo_foc",
    "check_cpo_paper_stationary",
    "check_cpo_unbounded",
    "check_dpo_gradient",
    "check_dpo_nll_alpha_zero",
    "check_dpo_nll_gradient",
    "check_dpo_nll_population",
    "check_dpop_gradient",
    "check_dpop_lambda_zero",
    "check_dpop_non_displaced",
    "check_dpop_population",
    "check_dpop_undesirable_space",
    "check_easy_margin_sign",
    "check_ecpoc",
    "check_ecpoc_bridge",
    "check_escape_time",
    "check_gamma_star",
    "check_gradient_shrinks",
    "check_gradient_vanishing",
    "check_hinge_limit",
    "check_key_identity",
    "check_log_space_margin",
    "check_no_stationary_point_hard_labels",
    "check_ordered_pair",
    "check_population_equivalence",
    "check_practical_forms",
    "check_real_data_rate",
    "check_released_reproduction",
    "check_released_targets",
    "check_rlhf_optimum",
    "check_shift_invariance",
    "check_soft_margin_bound",
    "check_thm49_approximate",
    "check_thm49_exact",
    "check_u_loss",
    "check_u_nonempty",
    "check_violation_condition",
    "population_loss",
    "tangent_negative_definite",
]

"""The registry of the paper's claims (PAPER.md C1–C10), the checkable statements of PAPER §6 (S6: the losses users
reach for against likelihood displacement) and :func:`run_claims`.

Adding a claim is adding one :class:`Claim` entry to :data:`CLAIMS`; the report, the CLI and the tests pick it up.
``expected`` records the verdict this toolkit has established for the statement as the paper makes it (and
``expected_corrected`` the verdict of the corrected or weaker statement); a run that differs is a regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import claims
from .core import FAILS, NOT_CHECKABLE, PROVED, VERIFIED, Claim, ClaimResult, Profile, get_profile

SYM = "sympy derivation"
HYP = "hypothesis search"

CLAIMS: tuple[Claim, ...] = (
    # ------------------------------------------------------------------------------------------------- C1
    Claim(
        "C1.rlhf-optimum",
        "Sec. 2 (KL-regularised RLHF)",
        "π*(y|x) = π_ref(y|x)·exp(r*(x,y)/β)/Z(x) maximises E_π[r*] − β·KL(π‖π_ref)",
        ("tabular bandit, any number of responses",),
        (SYM + " (Lagrangian, Hessian)", HYP + " (Gibbs bound)"),
        claims.check_rlhf_optimum,
        PROVED,
    ),
    Claim(
        "C1.key-identity",
        "Sec. 3 (key identity)",
        "δ_{π*} = δ_ref + Δr*/β",
        ("every pair of a tabular bandit",),
        (SYM, HYP),
        claims.check_key_identity,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C2
    Claim(
        "C2.violation-condition",
        "Assumption 3.1, Eq. 11",
        "Assumption 3.1 (π*(y_w|x) > π*(y_l|x)) fails on a pair iff β·δ_ref + Δr* ≤ 0",
        ("per pair; ties count as violations",),
        (SYM, HYP),
        claims.check_violation_condition,
        PROVED,
    ),
    Claim(
        "C2.beta-monotonicity",
        "Eq. 11 (discussion)",
        "A larger β or a smaller reward gap makes the violation easier",
        ("Δr* > 0 (labels agree with r*)", "noisy labels (Δr* of any sign), reported in the details"),
        (SYM, HYP),
        claims.check_beta_monotone,
        PROVED,
    ),
    Claim(
        "C2.chen-equivalence",
        "Eq. 11 vs Chen et al. 2024, Thm 3.1",
        "With α the share of raters preferring y_w, Δr* = log(α/(1−α)), and Chen et al.'s idealized ranking "
        "accuracy equals 1 − the violation rate",
        ("Bradley–Terry raters",),
        (SYM, HYP),
        claims.check_chen_equivalence,
        PROVED,
    ),
    Claim(
        "C2.real-data-rate",
        "Fig. 1, App. A.1",
        "45.5 % of pairs violate Eq. 11 with Llama-3-8B-Instruct as π_ref and β = 0.1",
        ("as reported",),
        ("needs an 8B model and ArmoRM rewards",),
        claims.check_real_data_rate,
        NOT_CHECKABLE,
    ),
    # ------------------------------------------------------------------------------------------------- C3
    Claim(
        "C3.nonempty",
        "Def. 3.3, Eq. 14",
        "U = {π : δ_ref < δ_π < 0} is non-empty iff δ_ref < 0",
        ("per pair",),
        (SYM, HYP),
        claims.check_u_nonempty,
        PROVED,
    ),
    Claim(
        "C3.loss-below-log2",
        "Def. 3.3, Eq. 14",
        "A policy in U has lowered the DPO loss below its value at π_ref (log 2) and still prefers y_l",
        ("per pair, both directions",),
        (SYM, HYP),
        claims.check_u_loss,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C4
    Claim(
        "C4.gradient",
        "Prop. 3.4",
        "∂ℓ_DPO/∂δ_θ = −β·σ(β(δ_ref − δ_θ))",
        ("per pair",),
        (SYM, HYP + " vs torch autograd"),
        claims.check_dpo_gradient,
        PROVED,
    ),
    Claim(
        "C4.gradient-shrinks",
        "Prop. 3.4",
        "On U the DPO gradient weight falls from β/2 (δ_θ = δ_ref) to β·σ(β·δ_ref) ≤ β·σ(−Δr*) at the exit δ_θ = 0",
        ("violated pairs",),
        (SYM, HYP),
        claims.check_gradient_shrinks,
        PROVED,
    ),
    Claim(
        "C4.vanishing",
        "Prop. 3.4",
        "Inside U the DPO gradient vanishes as δ_θ → 0 (gradient vanishing)",
        ("literal: the weight reaches 0", "relative: it shrinks by 2σ(β·δ_ref)"),
        (SYM, HYP),
        claims.check_gradient_vanishing,
        FAILS,
        PROVED,
    ),
    Claim(
        "C4.escape-time",
        "Prop. 3.4 (toolkit's quantitative form)",
        "Gradient flow on a tabular softmax policy leaves U after T = (|δ_ref| + (e^{β|δ_ref|} − 1)/β)/(2β)",
        ("gradient flow from π_ref",),
        (SYM + " (ODE and integral)", HYP + " vs LSODA and mpmath"),
        claims.check_escape_time,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C5
    Claim(
        "C5.population",
        "Sec. 3 (conditional equivalence), reading (a)",
        "The population BT cross-entropy −q·log σ(βu) − (1−q)·log σ(−βu), q = σ(Δr*), is stationary exactly at "
        "δ_θ = δ_{π*}, whatever its sign",
        ("two-sided Bradley–Terry population",),
        (SYM, HYP),
        claims.check_population_equivalence,
        PROVED,
    ),
    Claim(
        "C5.ordered-pair",
        "Sec. 3 (conditional equivalence), reading (b)",
        "DPO and RLHF are equivalent iff Assumption 3.1 holds for every pair",
        ("ordered pair: y_w always labelled the winner", "population reading as the corrected statement"),
        (SYM, HYP + " (paper's and minimal counterexample)"),
        claims.check_ordered_pair,
        FAILS,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C6
    Claim(
        "C6.shift-invariance",
        "Sec. 3 (relative, not absolute)",
        "ℓ_DPO depends on π only through δ_θ − δ_ref, so DPO can lower its loss while staying in U",
        ("per pair",),
        (SYM, HYP),
        claims.check_shift_invariance,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C7
    Claim(
        "C7.hinge-limit",
        "Prop. 5.1",
        "lim_{β→∞} ℓ_DPO/β = max(0, δ_ref − δ_θ)",
        ("per pair",),
        (SYM + " (limits by case)", HYP),
        claims.check_hinge_limit,
        PROVED,
    ),
    Claim(
        "C7.finite-beta-bound",
        "Prop. 5.1",
        "0 ≤ ℓ_DPO/β − max(0, δ_ref − δ_θ) ≤ (log 2)/β for finite β",
        ("per pair",),
        (SYM, HYP),
        claims.check_soft_margin_bound,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------- C8
    Claim(
        "C8.unbounded",
        "Def. 4.7",
        "For γ > 0 the CPO objective E_π[r*] − β·KL(π‖π_ref) + γ·E_D[δ_π] is unbounded above (π(y_l) → 0)",
        ("datasets with a response that loses more than it wins in some context",),
        (SYM + " (diverging path)", HYP),
        claims.check_cpo_unbounded,
        PROVED,
    ),
    Claim(
        "C8.foc",
        "Thm 4.8",
        "Stationary points satisfy β(δ − δ_ref) = Δr* + γ(1/π_γ(y_w) + 1/π_γ(y_l))",
        ("one pair per context, interior stationary point",),
        (SYM, HYP + " (∇J, FOC, Hessian)"),
        claims.check_cpo_foc,
        PROVED,
    ),
    Claim(
        "C8.population-stationary",
        "Thm 4.8 (CPO loss)",
        "The population stationary point of ℓ_CPO = −log σ(β(δ − δ_ref) − m) is δ = δ_ref + (Δr* + m)/β",
        ("two-sided BT population (C5a's reading)", "target shift / approximate CPO objective (corrected)"),
        (SYM + " (closed form)", HYP),
        claims.check_cpo_paper_stationary,
        FAILS,
        PROVED,
    ),
    Claim(
        "C8.approximation-error",
        "Prop. H.2, Remark H.3",
        "The error of the approximation 1/π_γ ≈ 1/π_ref is bounded, and largest where π_ref is most misaligned",
        ("the bound itself", "exact error identity and its first-order form (corrected)"),
        (HYP,),
        claims.check_cpo_approximation,
        NOT_CHECKABLE,
        VERIFIED,
    ),
    Claim(
        "C8.gamma-star",
        "Eq. 27",
        "γ* = max_pairs [−β·δ_ref − Δr*]_+ / (1/π_ref(y_w) + 1/π_ref(y_l)) is the smallest γ making the stationary "
        "δ positive on every pair",
        ("approximate stationary point",),
        (SYM, HYP + " (incl. log space vs mpmath)"),
        claims.check_gamma_star,
        PROVED,
    ),
    Claim(
        "C8.thm4.9-approximate",
        "Thm 4.9",
        "γ > γ* ⇒ U is avoided on every pair",
        ("approximate stationary point δ_ref + (Δr* + m)/β",),
        (SYM, HYP),
        claims.check_thm49_approximate,
        PROVED,
    ),
    Claim(
        "C8.thm4.9-exact",
        "Thm 4.9",
        "γ > γ* ⇒ U is avoided on every pair",
        ("exact interior stationary point of the CPO objective", "γ > max[−βδ_ref − Δr*]_+/4 (corrected)"),
        (SYM, HYP),
        claims.check_thm49_exact,
        FAILS,
        PROVED,
    ),
    Claim(
        "C8.log-space-margin",
        "Thm 4.8 (sequence level)",
        "Whole-sequence margins m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) (~e^{200}) are computed in log space and never "
        "overflow silently",
        ("summed log-probs",),
        (HYP + " vs mpmath",),
        claims.check_log_space_margin,
        VERIFIED,
    ),
    # ------------------------------------------------------------------------------------------------- C9
    Claim(
        "C9.ecpoc-kkt",
        "Sec. 4 (E-CPOC)",
        "E-CPOC (max RLHF objective s.t. δ_π ≥ ε) is convex with solution π ∝ π_ref·exp((r* + Σλ_i(1[w_i] − "
        "e^ε·1[l_i]))/β), λ ≥ 0; one pair: δ = max(δ*, ε)",
        ("tabular bandit",),
        (SYM, HYP + " (KKT recomputed, closed form)"),
        claims.check_ecpoc,
        PROVED,
    ),
    Claim(
        "C9.bridge",
        "Assumptions 4.1–4.5, Cond. 4.6, Lemma L.1",
        "A small excess loss certifies δ_θ > 0 on every pair (loss-to-delta bridge, with a √N factor)",
        ("the paper's constants", "excess-population-loss certificate (weaker, corrected)"),
        (SYM, HYP),
        claims.check_ecpoc_bridge,
        NOT_CHECKABLE,
        PROVED,
    ),
    Claim(
        "C9.practical-forms",
        "Sec. 4 / released code",
        "The released clip and adaptive softplus branches are practical forms of E-CPOC (they keep δ_θ ≥ ε)",
        ("two-sided BT population stationary point", "effective (hinge) target (corrected)"),
        (SYM, HYP),
        claims.check_practical_forms,
        FAILS,
        PROVED,
    ),
    # ------------------------------------------------------------------------------------------------ C10
    Claim(
        "C10.reproduction",
        "released code (easy / clip / adaptive)",
        "dpocheck.theory's released_* losses reproduce the released code's three branches exactly",
        ("float64, per-token mean log-probs",),
        (HYP + " vs an independent torch reference",),
        claims.check_released_reproduction,
        VERIFIED,
    ),
    Claim(
        "C10.easy-margin-sign",
        "released code `easy` vs Thm 4.8",
        "The released `easy` branch implements the CPO margin m = γ(1/π_ref(y_w) + 1/π_ref(y_l)) on per-token "
        "mean log-probs",
        ("released `easy` = C8's margin", "sign of the released margin (corrected)"),
        (SYM, HYP),
        claims.check_easy_margin_sign,
        FAILS,
        PROVED,
    ),
    Claim(
        "C10.targets",
        "released code (three branches)",
        "Targets for δ_θ: easy δ_ref + a/β; clip max(δ_ref, 0); adaptive δ_ref + softplus(τ(γ − δ_ref))/(ατ) → "
        "max(δ_ref, γ) (τ → ∞, α = 1); each branch's two-sided BT population stationary point solves "
        "(1−q)e^{c₂}B² + (1−2q)e^{c₁+c₂}B − q·e^{c₁} = 0, B = e^{βδ} [ours]",
        ("one-sided losses; population points reported",),
        (SYM, HYP),
        claims.check_released_targets,
        PROVED,
    ),
    # ------------------------------------------------------------------------- S6 (PAPER §6, not the paper's claims)
    Claim(
        "S6.dpop-lambda0",
        "Pal et al. 2024 (arXiv 2402.13228), PAPER §6",
        "DPOP with λ = 0 is DPO (loss and derivatives)",
        ("per pair, both log-prob conventions",),
        (SYM, HYP + " (bit for bit, registry included)"),
        claims.check_dpop_lambda_zero,
        PROVED,
    ),
    Claim(
        "S6.dpo-nll-alpha0",
        "Pang et al. 2024 (RPO, arXiv 2404.19733), PAPER §6",
        "DPO + NLL with α = 0 is DPO (loss and derivatives)",
        ("per pair, both log-prob conventions",),
        (SYM, HYP + " (bit for bit, registry included)"),
        claims.check_dpo_nll_alpha_zero,
        PROVED,
    ),
    Claim(
        "S6.dpop-non-displaced",
        "Pal et al. 2024, PAPER §6 [ours]",
        "DPOP's penalty is zero unless Δ_w < 0, so DPOP coincides with DPO on every pair that is not displaced; on "
        "displaced pairs its loss and its gradient weight exceed DPO's",
        ("per pair, λ ≥ 0",),
        (SYM, HYP),
        claims.check_dpop_non_displaced,
        PROVED,
    ),
    Claim(
        "S6.dpop-gradient",
        "Pal et al. 2024, PAPER §6",
        "∂ℓ_DPOP/∂δ_θ = −β·σ(z), ∂ℓ_DPOP/∂log π_θ(y_w) = −β·λ·σ(z)·1[Δ_w < 0] (0 at the kink Δ_w = 0), z = β(δ_ref − "
        "δ_θ) + β·λ·P; tabular logit gradient g_δ(e_w − e_l) + g_w(e_w − π(·|x))",
        ("per pair; tabular softmax policies",),
        (SYM, HYP + " vs torch autograd"),
        claims.check_dpop_gradient,
        PROVED,
    ),
    Claim(
        "S6.dpo-nll-gradient",
        "Pang et al. 2024, PAPER §6",
        "∂ℓ/∂δ_θ = −β·σ(β(δ_ref − δ_θ)), ∂ℓ/∂log π_θ(y_w) = −α/|y_w|; the NLL term is per token in both log-prob "
        "conventions; tabular logit gradient g_δ(e_w − e_l) + g_w(e_w − π(·|x))",
        ("per pair, summed and per-token mean log-probs; tabular softmax policies",),
        (SYM, HYP + " vs torch autograd"),
        claims.check_dpo_nll_gradient,
        PROVED,
    ),
    Claim(
        "S6.hard-labels",
        "PAPER §6 [ours], as C5 (b)",
        "With hard labels neither DPOP nor DPO + NLL has a stationary point on a pair of a tabular softmax policy: "
        "∂ℓ/∂z_l = β·σ(z)·(1 + λ·1[Δ_w < 0]·π(y_l)) resp. β·σ(z) + α·π(y_l) > 0",
        ("ordered pair, one pair per context",),
        (SYM, HYP),
        claims.check_no_stationary_point_hard_labels,
        PROVED,
    ),
    Claim(
        "S6.dpop-population",
        "Pal et al. 2024, PAPER §6 [ours], C5 (a)",
        "Under the two-sided Bradley–Terry population DPOP's stationary margin is δ* = δ_{π*}, as DPO's",
        ("two-sided BT population, one pair per context", "between δ_ref and δ*, closed-form cases (corrected)"),
        (SYM + " (one-sided derivatives, convexity)", HYP + " vs an independent face loss"),
        claims.check_dpop_population,
        FAILS,
        PROVED,
    ),
    Claim(
        "S6.dpop-undesirable-space",
        "Pal et al. 2024, PAPER §6 [ours], C3",
        "DPOP's population stationary point avoids U wherever DPO's (δ*) does",
        ("two-sided BT population, δ_ref < 0 ≤ δ*", "δ* ∈ U ⇒ DPOP's point in [δ_ref, δ*] (corrected)"),
        (HYP,),
        claims.check_dpop_undesirable_space,
        FAILS,
        VERIFIED,
    ),
    Claim(
        "S6.dpo-nll-population",
        "Pang et al. 2024, PAPER §6 [ours], C5 (a)",
        "Under the two-sided Bradley–Terry population DPO + NLL's stationary margin is δ* = δ_{π*}, as DPO's",
        ("two-sided BT population, one pair per context", "between δ* and Δr*, α* to leave U (corrected)"),
        (SYM, HYP + " vs brentq"),
        claims.check_dpo_nll_population,
        FAILS,
        PROVED,
    ),
)

_BY_ID = {c.id: c for c in CLAIMS}


def claim_ids() -> list[str]:
    """Registered claim ids in order."""
    return [c.id for c in CLAIMS]


def get_claim(claim_id: str) -> Claim:
    """The registered claim with this id."""
    try:
        return _BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim {claim_id!r}; registered: {', '.join(claim_ids())}") from None


def select_claims(only: Sequence[str] | None = None, claims: Sequence[Claim] | None = None) -> list[Claim]:
    """Claims whose id equals an entry of `only` or starts with it followed by '.' (``C4`` selects C4.*).

    Raises ValueError naming any entry that selects nothing.
    """
    pool = list(CLAIMS if claims is None else claims)
    if not only:
        return pool
    chosen: list[Claim] = []
    for key in only:
        hits = [c for c in pool if c.id == key or c.id.startswith(key + ".")]
        if not hits:
            raise ValueError(f"--only {key!r} matches no claim; registered: {', '.join(c.id for c in pool)}")
        chosen.extend(c for c in hits if c not in chosen)
    return [c for c in pool if c in chosen]  # registry order


ProgressFn = Callable[[int, int, ClaimResult], Any]


def run_claims(
    profile: str | Profile = "fast",
    only: list[str] | None = None,
    progress: ProgressFn | None = None,
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[ClaimResult]:
    """Check the registered claims (all, or those selected by `only`) and return one ClaimResult each, in order.

    profile: "fast" (the default; < 60 s on 2 cores) or "thorough" (more hypothesis examples).
    progress: called after each claim as progress(done, total, result).
    overrides: {claim id: {formula parameter: replacement}} — inject formulas under test (mutation testing).
    """
    prof = get_profile(profile)
    selected = select_claims(only)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(_BY_ID))
    if unknown:
        raise ValueError(f"overrides for unknown claim(s) {unknown}")
    results: list[ClaimResult] = []
    for i, claim in enumerate(selected, start=1):
        result = claim.run(prof, **overrides.get(claim.id, {}))
        results.append(result)
        if progress is not None:
            progress(i, len(selected), result)
    return results

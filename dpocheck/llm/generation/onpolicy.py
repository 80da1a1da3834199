"""``dpocheck onpolicy``: on-policy preference data and its C2 verdict in one resumable run (the paper's E1 setting).

The paper's E1 data are on-policy: responses sampled from π_ref, ranked by a reward model (ArmoRM), best vs worst
per prompt, Δr* from the reward model (PAPER.md C2). One run, one output folder ``OUT``, five stages, each written
through the output protocol of :mod:`dpocheck.llm.manifest` and each resumable:

1. ``samples.jsonl`` — K samples per prompt from ``model`` (:mod:`~dpocheck.llm.generation.sample`: batched,
   left-padded ``generate`` calls seeded per batch, log π(y|x) by a forward pass; ``--dtype auto`` is bf16 on
   CUDA); manifest ``samples.jsonl.manifest.json`` (tool ``sample``);
2. ``rewards.jsonl`` — r(x, y) of every sample from the reward model
   (:func:`~dpocheck.llm.generation.reward.reward_samples_to_file`: the one renderer's full text, as ``dpocheck
   reward`` reads pairs); manifest tool ``reward-samples``;
3. ``pairs.jsonl`` — best vs worst sample of each prompt by reward (``pair_mode="best-worst"``; ``all``: every
   pair of distinct samples, higher reward chosen), TRL records with ``score_chosen``/``score_rejected`` = the
   rewards, so Δr* = r(y_w) − r(y_l) comes from the reward model (ties, empty and duplicate responses skipped and
   counted); deterministic from stages 1–2, rewritten on every run;
4. ``reference/`` — a ``dpocheck score`` folder: log π_ref of both responses of every pair (``reference_model``,
   default ``model``: the sampler is the reference, as in E1); its rows carry the pairs' Δr* (source
   ``score_columns``);
5. ``violations/`` — ``violations-<sum|mean>.json``/``.md`` (and the toy Fig. 1) of ``dpocheck violations`` on the
   reference scores with that Δr* (never Δr* = 0): the C2 violation rate per β with bootstrap intervals.

``OUT/manifest.json`` (tool ``onpolicy``) fingerprints the prompts (sha256), the three models and every setting;
``resume=True`` refuses other inputs, skips complete stages without loading their models and continues a cut one
(samples and rewards from their ``.partial`` files, reference scores from their shards). Models are loaded one at
a time and freed before the next stage. With the sampler as reference the manifest also records how far the
reference scores of the pairs are from the samples' own forward-pass log-probs (``consistency``: pairs whose two
responses re-tokenise to the sampled ids; they agree to float rounding in fp32).
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpocheck._io import read_jsonl, write_text_atomic
from dpocheck.errors import InputError
from dpocheck.llm.analysis.results import DEFAULT_BETAS
from dpocheck.llm.manifest import (
    MANIFEST,
    data_identity,
    is_complete,
    open_output,
    read_manifest_if_any,
    sidecar_path,
)
from dpocheck.llm.preflight import check_model_path, check_output_path

from .reward import RewardSettings, load_reward_model, reward_samples_to_file
from .sample import PAIR_MODES, SampleSettings, form_pairs, read_prompts, sample_to_file

TOOL = "onpolicy"
SAMPLES, REWARDS, PAIRS, REFERENCE, VIOLATIONS = (
    "samples.jsonl",
    "rewards.jsonl",
    "pairs.jsonl",
    "reference",
    "violations",
)
RESUME_FREE = ("out", "device", "plot")  # settings that may differ when a run is resumed


@dataclass
class OnPolicySettings:
    """Everything ``dpocheck onpolicy`` needs; all but :data:`RESUME_FREE` must match on resume."""

    prompts: str
    reward_model: str
    out: str
    model: str | None = None  # None: the default SmolLM2 GGUF
    reference_model: str | None = None  # None: the sampling model
    k: int = 4
    seed: int = 0
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    sample_batch_size: int = 8
    reward_batch_size: int = 8
    reward_max_length: int | None = 2048  # None: the reward model's context
    max_length: int | None = 1024  # reference scoring; None: the model's context
    batch_tokens: int = 4096
    pair_mode: str = "best-worst"
    chat_template: str = "auto"
    dtype: str = "auto"
    limit: int | None = None
    betas: list[float] = field(default_factory=lambda: list(DEFAULT_BETAS))
    normalize: list[str] = field(default_factory=lambda: ["sum", "mean"])
    bootstrap: int = 2000
    trust_remote_code: bool = False
    device: str | None = None
    plot: bool = True

    def sample_settings(self) -> SampleSettings:
        return SampleSettings(
            k=self.k,
            seed=self.seed,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            chat_template=self.chat_template,
            batch_size=self.sample_batch_size,
        )

    def reward_settings(self) -> RewardSettings:
        return RewardSettings(
            batch_size=self.reward_batch_size,
            max_length=self.reward_max_length,
            chat_template=self.chat_template,
            dtype=self.dtype,
        )

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share, paths made absolute."""
        d = asdict(self)
        for key in ("prompts", "reward_model", "model", "reference_model"):
            if d[key] is not None:
                d[key] = os.path.abspath(d[key])
        return {k: v for k, v in d.items() if k not in RESUME_FREE}


def validate(s: OnPolicySettings) -> None:
    """Numbers and choices, named by their command-line flag (InputError), before anything is read or loaded."""
    for flag, value, low in (
        ("--k", s.k, 1),
        ("--max-new-tokens", s.max_new_tokens, 1),
        ("--sample-batch-size", s.sample_batch_size, 1),
        ("--reward-batch-size", s.reward_batch_size, 1),
        ("--batch-tokens", s.batch_tokens, 1),
        ("--top-k", s.top_k, 0),
        ("--limit", s.limit, 0),
        ("--bootstrap", s.bootstrap, 0),
    ):
        if value is not None and value < low:
            raise InputError(f"{flag}: must be >= {low}, got {value}")
    if s.pair_mode not in PAIR_MODES:
        raise InputError(f"--pair-mode: expected one of {PAIR_MODES}, got {s.pair_mode!r}")
    for flag, value in (("--max-length", s.max_length), ("--reward-max-length", s.reward_max_length)):
        if value is not None and value < 2:
            raise InputError(f"{flag}: must be 0 (the model's context) or >= 2, got {value}")
    if s.k < 2:
        raise InputError(f"--k: a pair needs two samples per prompt, got {s.k}")
    try:
        s.sample_settings()
        s.reward_settings()
    except ValueError as err:
        raise InputError(f"sampling settings: {err}") from None
    if not s.betas or any(not (b > 0 and b < float("inf")) for b in s.betas):
        raise InputError(f"--beta: every β must be finite and > 0, got {s.betas}")


def _free() -> None:
    """Release a stage's model (its last reference already deleted) before the next loads: host and device memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _say(msg: str, show: bool) -> None:
    if show:
        print(f"dpocheck onpolicy: {msg}", file=sys.stderr, flush=True)


def run_onpolicy(
    settings: OnPolicySettings,
    *,
    resume: bool = False,
    show_progress: bool = True,
    stop_after: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the five stages of the module docstring into ``settings.out``; returns a summary.

    ``stop_after=(stage, n)`` simulates a kill for tests: stage ``samples`` or ``rewards`` stops after n batches,
    leaving its ``.partial`` file and the run unfinished (the summary says ``stopped``).
    """
    from dpocheck.llm.models import model_fingerprint

    s = settings
    validate(s)
    out = check_output_path(s.out, directory=True)
    prompts = read_prompts(s.prompts, limit=s.limit)  # a bad prompt stops here, before any model loads
    policy = check_model_path(s.model)
    reward_model = check_model_path(s.reward_model, "--reward-model")
    reference = check_model_path(s.reference_model, "--reference-model") if s.reference_model else policy
    fingerprint = {
        "models": {
            "policy": model_fingerprint(policy),
            "reward": model_fingerprint(reward_model),
            "reference": model_fingerprint(reference),
        },
        "prompts": data_identity(s.prompts, limit=s.limit),
        "settings": s.identity(),
    }
    stray = sorted(p for p in out.iterdir() if p.name != MANIFEST)[:1] if out.is_dir() else []
    run = open_output(
        out / MANIFEST,
        fingerprint,
        tool=TOOL,
        resume=resume,
        outputs=stray,
        where=str(out),
        extra={"stages": {}},
        keep=("sessions", "stages"),  # a resumed run keeps the records of the stages it skips
    )
    if run.previous_failure:
        _say(run.previous_failure, show_progress)
    stages: dict[str, Any] = run.manifest["stages"]
    stop = dict([stop_after]) if stop_after else {}
    with run.guard():
        # 1. samples
        samples_p = out / SAMPLES
        if not is_complete(read_manifest_if_any(sidecar_path(samples_p))):
            _say(f"sampling {s.k} responses for each of {len(prompts)} prompts from {policy}", show_progress)
            stages["samples"] = _sample_stage(s, policy, prompts, samples_p, resume, show_progress, stop)
            run.save()
            if not stages["samples"]["complete"]:
                return {"out": str(out), "stopped": "samples", "stages": stages}
        samples = read_jsonl(samples_p)

        # 2. rewards of every sample
        rewards_p = out / REWARDS
        if not is_complete(read_manifest_if_any(sidecar_path(rewards_p))):
            stopped = _reward_stage(s, reward_model, samples, samples_p, rewards_p, resume, show_progress, stop)
            stages["rewards"] = stopped
            run.save()
            if not stopped["complete"]:
                return {"out": str(out), "stopped": "rewards", "stages": stages}
        rewards = {(r["prompt_index"], r["sample_index"]): r["reward"] for r in read_jsonl(rewards_p)}

        # 3. pairs with Δr* from the reward model
        pairs_info = form_pairs(samples_p, out / PAIRS, mode=s.pair_mode, reward_field="reward", rewards=rewards)
        stages["pairs"] = pairs_info
        if pairs_info["pairs"] == 0:
            raise InputError(
                f"{out / PAIRS}: no pair could be formed (skipped: {pairs_info['skipped']}); sample more (--k) or "
                "longer responses (--max-new-tokens)"
            )
        _say(f"{pairs_info['pairs']} {s.pair_mode} pairs (skipped {pairs_info['skipped']})", show_progress)

        # 4. reference scores of the pairs
        stages["reference"] = _reference_stage(s, reference, out, resume, show_progress)
        if reference == policy:
            stages["consistency"] = sample_score_consistency(samples, out / PAIRS, out / REFERENCE)
        run.save()

        # 5. violations with the pairs' Δr*
        stages["violations"] = write_violations(out / REFERENCE, out / VIOLATIONS, s)
        counts = {
            "prompts": len(prompts),
            "samples": len(samples),
            "pairs": pairs_info["pairs"],
            "pairs_skipped": pairs_info["skipped"],
            "scored": stages["reference"]["scored"],
            "reference_skipped": stages["reference"]["skipped_by_reason"],
        }
        run.complete(counts)
    return {"out": str(out), "stopped": None, "counts": counts, "stages": stages}


def _sample_stage(
    s: OnPolicySettings,
    policy: Path,
    prompts: list[Any],
    samples_p: Path,
    resume: bool,
    show_progress: bool,
    stop: dict[str, int],
) -> dict[str, Any]:
    from dpocheck.llm.models import load_model

    loaded = load_model(
        policy, dtype=s.dtype, device=s.device, trust_remote_code=s.trust_remote_code, progress=show_progress
    )
    info = sample_to_file(
        loaded.model,
        loaded.tokenizer,
        prompts,
        samples_p,
        s.sample_settings(),
        resume=resume,
        show_progress=show_progress,
        model_path=str(policy),
        prompts_path=s.prompts,
        stop_after_batches=stop.get("samples"),
    )
    info.update(dtype=str(loaded.dtype), device=str(loaded.device))
    del loaded
    _free()
    return info


def _reward_stage(
    s: OnPolicySettings,
    reward_model: Path,
    samples: list[dict[str, Any]],
    samples_p: Path,
    rewards_p: Path,
    resume: bool,
    show_progress: bool,
    stop: dict[str, int],
) -> dict[str, Any]:
    from dataclasses import replace

    from dpocheck.llm.models import model_fingerprint, quiet_loading
    from dpocheck.llm.scoring.settings import cap_max_length, context_length

    _say(f"rewarding {len(samples)} samples with {reward_model}", show_progress)
    with quiet_loading(not show_progress):
        model, tokenizer, device = load_reward_model(
            reward_model, dtype=s.dtype, device=s.device, trust_remote_code=s.trust_remote_code
        )
    max_length, note = cap_max_length(s.reward_max_length, context_length(model, tokenizer))
    if note:
        _say(f"reward model: {note}", show_progress)
    settings = replace(s.reward_settings(), max_length=max_length)
    identity = {"model": model_fingerprint(reward_model), "data": data_identity(samples_p)}
    now, before = reward_samples_to_file(
        model,
        tokenizer,
        samples,
        rewards_p,
        settings,
        identity=identity,
        resume=resume,
        show_progress=show_progress,
        stop_after_batches=stop.get("rewards"),
        model_name=reward_model.name,
    )
    del model, tokenizer
    _free()
    complete = is_complete(read_manifest_if_any(sidecar_path(rewards_p)))
    return {"complete": complete, "rewarded_now": now, "done_before": before, "device": str(device)}


def _reference_stage(s: OnPolicySettings, reference: Path, out: Path, resume: bool, show: bool) -> dict[str, Any]:
    """Score the pairs under the reference model into ``out/reference`` (what ``dpocheck score`` does)."""
    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.manifest import read_manifest
    from dpocheck.llm.models import load_model, load_tokenizer, model_fingerprint
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import score_to_directory
    from dpocheck.llm.scoring.settings import ScoreSettings, cap_max_length, context_length

    ref_dir = out / REFERENCE
    previous = read_manifest_if_any(ref_dir / MANIFEST)
    if is_complete(previous):
        counts = previous.get("counts", {})
        return {"scored": counts.get("scored"), "skipped_by_reason": counts.get("skipped_by_reason", {})}
    pairs_p = out / PAIRS
    use_tpl = resolve_chat_template(load_tokenizer(reference, trust_remote_code=s.trust_remote_code), s.chat_template)
    prompt_style = "chat" if use_tpl else "text"
    load = load_pairs(pairs_p, "trl", prompt_style=prompt_style, on_error="skip")
    _say(f"scoring {len(load.pairs)} pairs under the reference {reference}", show)
    loaded = load_model(reference, dtype=s.dtype, device=s.device, trust_remote_code=s.trust_remote_code, progress=show)
    max_length, note = cap_max_length(s.max_length, context_length(loaded.model, loaded.tokenizer))
    if note:
        _say(f"reference: {note}", show)
    settings = ScoreSettings(
        max_length=max_length,
        batch_tokens=s.batch_tokens,
        chat_template=s.chat_template,
        dtype=s.dtype,
        prefix_mode="packed",
        on_error="skip",
    )
    model_id = {**model_fingerprint(loaded.path), "source": loaded.source, "dtype": str(loaded.dtype)}
    data_id = data_identity(pairs_p, format=load.format, delta_reward_source="auto", prompt_style=prompt_style)
    extra = {
        "load": {"n_records": load.n_records, "pairs": len(load.pairs), "skipped": load.skipped},
        "delta_reward_sources": load.delta_reward_sources,
        "device": str(loaded.device),
    }
    score_to_directory(
        loaded.model,
        loaded.tokenizer,
        load.pairs,
        ref_dir,
        settings,
        model_identity=model_id,
        data_identity=data_id,
        resume=resume,
        extra=extra,
        show_progress=show,
        reader_skipped=load.skipped,
        n_records=load.n_records,
        bound_memory=True,
    )
    del loaded
    _free()
    counts = read_manifest(ref_dir / MANIFEST).get("counts", {})
    return {"scored": counts.get("scored"), "skipped_by_reason": counts.get("skipped_by_reason", {})}


def sample_score_consistency(samples: list[dict[str, Any]], pairs_p: Path, ref_dir: Path) -> dict[str, Any]:
    """Largest |log π_ref(y|x) of the reference scores − the sample's own forward-pass log-prob| over the responses
    of pairs whose samples re-tokenise to their sampled ids and were not truncated (the sampler is the reference)."""
    by_key = {(r["prompt_index"], r["sample_index"]): r for r in samples}
    scores = {r["index"]: r for r in read_jsonl(ref_dir / "scores.jsonl")}
    gaps = []
    for n, pair in enumerate(read_jsonl(pairs_p)):
        row = scores.get(n)
        if row is None:
            continue
        for side in ("chosen", "rejected"):
            sample = by_key[(pair["prompt_index"], pair[f"{side}_sample"])]
            if sample["retokenizes"] and not row[f"{side}_truncated"]:
                gaps.append(abs(row[f"{side}_logp_sum"] - sample["logp_sum"]))
    return {
        "responses_compared": len(gaps),
        "max_abs_logp_gap": max(gaps) if gaps else None,
        "what": "reference scores of the pairs vs the samples' forward-pass log π(y|x), responses that re-tokenise",
    }


def write_violations(ref_dir: Path, out_dir: Path, s: OnPolicySettings) -> dict[str, Any]:
    """``dpocheck violations`` on the reference scores with the rows' Δr* (the reward model's, never 0)."""
    from dpocheck.llm import analysis as A

    table = A.read_scores(ref_dir)
    dr = A.resolve_delta_reward(table)
    if dr.values is None:  # the pairs always carry score columns; this would be a bug upstream
        raise InputError(f"{ref_dir}: the scored pairs carry no Δr* ({dr.label})")
    summary: dict[str, Any] = {"delta_reward": dr.label, "violation_rate": {}}
    for norm in s.normalize:
        report = A.analyze(table, betas=s.betas, normalization=norm, delta_reward=dr, n_bootstrap=s.bootstrap)
        write_text_atomic(out_dir / f"violations-{norm}.json", A.report_to_json(report))
        write_text_atomic(out_dir / f"violations-{norm}.md", A.render_markdown(report))
        if s.plot:
            A.plot_fig1(table, dr, s.betas, norm, out_dir / f"fig1-{norm}.png")
        summary["violation_rate"][norm] = {
            str(b): report.at_beta(b).violation_rate.value for b in s.betas if report.at_beta(b).violation_rate
        }
    return summary

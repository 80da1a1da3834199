"""Refusing to join a policy's scores with a reference's made under other tokenisation settings (C3, C4).

δ_θ − δ_ref of a pair (the share in U, C3; the DPO gradient weight, C4; the DPO loss) means something only when
both log-probs cover the same tokens. A policy scored at ``--max-length 8`` against a reference scored at 64
compares a two-token prompt's response with the whole pair: the numbers come out, and are wrong. So before
``dpocheck violations`` joins ``--policy-scores`` (a ``dpocheck score`` folder, or a ``dpocheck train`` run's
``eval/step-N.jsonl``) with ``--scores`` on ``index``, both sides' recorded tokenisation must agree:

* **settings** (:data:`COMPARED`), from each manifest: the effective token budget (after the context rule, so
  ``--max-length 0`` and the model's context compare equal), whether a chat template was used and its sha256, and
  the tokenizer's identity (class, vocabulary size, BOS and EOS tokens). A score folder records them in
  ``fingerprint.settings`` / ``fingerprint.tokenizer``; a train run in ``max_length_used`` and ``tokenizer`` (runs
  written before that key existed: its reference folder's). The prefix mode (``packed``, ``cache``, ``none``)
  changes how the prompt is shared, not which tokens are scored (the modes agree to float rounding, tested), so a
  difference is noted, not refused; nor are the pad token (never scored) and the dtype.
* **pair by pair**, on the joined indices: the token counts of both responses and, where both sides record them,
  the truncation flags.

A difference is an :class:`~dpocheck.llm.analysis.scores.ScoresError` (exit 2) naming the setting and both values,
saying how to proceed (score both with the same settings). ``allow_mismatch`` (``--allow-settings-mismatch``)
joins anyway and returns a note that the report carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpocheck.llm.manifest import MANIFEST, read_manifest_if_any

from .scores import ScoresError, ScoreTable

#: The recorded settings that must agree: key → what the user changes to make them agree.
COMPARED = {
    "max_length": "the token budget (--max-length, after the context rule)",
    "chat_template_used": "chat template use (--chat-template)",
    "chat_template_sha256": "the chat template (its sha256)",
    "tokenizer_class": "the tokenizer (class)",
    "vocab_size": "the tokenizer (vocabulary size)",
    "bos_token": "the tokenizer (BOS token)",
    "eos_token": "the tokenizer (EOS token)",
}
_TOKENIZER_KEYS = {"class": "tokenizer_class", "vocab_size": "vocab_size", "bos_token": "bos_token"}
_TOKENIZER_KEYS |= {"eos_token": "eos_token", "chat_template_used": "chat_template_used"}
_TOKENIZER_KEYS |= {"chat_template_sha256": "chat_template_sha256"}
_HINT = (
    "score the policy and the reference with the same settings (the same --max-length, --chat-template and "
    "tokenizer: `dpocheck score`, or `dpocheck train` with the reference's settings), or pass "
    "--allow-settings-mismatch to join anyway (labelled in the report)"
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def recorded_tokenisation(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The tokenisation settings a scores or train manifest records (keys of :data:`COMPARED`, plus
    ``prefix_mode``); a key is absent when the manifest does not say."""
    if not manifest:
        return {}
    fp = _dict(manifest.get("fingerprint"))
    settings = _dict(fp.get("settings"))
    out: dict[str, Any] = {}
    if manifest.get("tool") == "train":
        tok = _dict(manifest.get("tokenizer"))
        if not tok:  # a run written before the train manifest recorded its tokenizer: its reference scores say
            ref = _dict(manifest.get("reference")).get("scores")
            ref_manifest = read_manifest_if_any(Path(ref) / MANIFEST) if isinstance(ref, str) else None
            tok = _dict(_dict((ref_manifest or {}).get("fingerprint")).get("tokenizer"))
        if "max_length_used" in manifest:
            out["max_length"] = manifest["max_length_used"]
        elif settings.get("max_length"):
            out["max_length"] = settings["max_length"]
        out["prefix_mode"] = "packed"  # the eval files are scored by the packed kernel
    else:
        tok = _dict(fp.get("tokenizer"))
        if "max_length" in settings:
            out["max_length"] = settings["max_length"]
        if "prefix_mode" in settings:
            out["prefix_mode"] = settings["prefix_mode"]
    for key, name in _TOKENIZER_KEYS.items():
        if key in tok:
            out[name] = tok[key]
    if not out.get("chat_template_used"):
        out.pop("chat_template_sha256", None)  # a template that was not used changes nothing
    return out


def check_same_tokenisation(
    reference: ScoreTable,
    policy: ScoreTable,
    *,
    allow_mismatch: bool = False,
    names: tuple[str, str] = ("--scores", "--policy-scores"),
) -> list[str]:
    """Refuse to join ``policy`` with ``reference`` when their tokenisation differs (see the module docstring).

    Returns notes for the report: settings that could not be checked, a prefix-mode difference, and with
    ``allow_mismatch`` the differences joined anyway. ``names``: how the two inputs are named in messages.
    """
    ref_name, pol_name = (f"{n} {t.source}" for n, t in zip(names, (reference, policy), strict=True))
    ref_set, pol_set = recorded_tokenisation(reference.manifest), recorded_tokenisation(policy.manifest)
    notes: list[str] = []
    problems: list[str] = []
    unknown = [k for k in COMPARED if (k in ref_set) != (k in pol_set) and k != "chat_template_sha256"]
    for key, what in COMPARED.items():
        if key in ref_set and key in pol_set and ref_set[key] != pol_set[key]:
            problems.append(f"{what} differs: {pol_set[key]!r} for {pol_name} but {ref_set[key]!r} for {ref_name}")
    if not ref_set or not pol_set:
        which = ref_name if not ref_set else pol_name
        notes.append(
            f"{which} records no tokenisation settings; only token counts and truncation flags were compared "
            "pair by pair"
        )
    elif unknown:
        notes.append(f"not recorded on both sides, so not compared: {', '.join(unknown)}")
    if "prefix_mode" in ref_set and "prefix_mode" in pol_set and ref_set["prefix_mode"] != pol_set["prefix_mode"]:
        notes.append(
            f"prefix modes differ ({pol_set['prefix_mode']} for the policy, {ref_set['prefix_mode']} for the "
            "reference): the same tokens, log-probs equal to float rounding"
        )
    if not problems:
        problems += _pair_differences(reference, policy, ref_name, pol_name)
    if problems:
        if not allow_mismatch:
            raise ScoresError(
                f"tokenisation mismatch: {problems[0]}; δ_θ and δ_ref would cover different tokens; {_HINT}"
            )
        notes.append("JOINED DESPITE A TOKENISATION MISMATCH (--allow-settings-mismatch): " + "; ".join(problems[:3]))
    return notes


def _pair_differences(reference: ScoreTable, policy: ScoreTable, ref_name: str, pol_name: str) -> list[str]:
    """Joined pairs whose token counts or truncation flags differ (the first named, with how many)."""
    common, i_ref, i_pol = np.intersect1d(reference.index, policy.index, return_indices=True)
    bad: list[tuple[int, str, Any, Any]] = []
    for side in ("chosen", "rejected"):
        a, b = getattr(reference, f"{side}_tokens")[i_ref], getattr(policy, f"{side}_tokens")[i_pol]
        known = (a >= 1) & (b >= 1)
        bad += [(int(common[k]), f"{side}_tokens", int(b[k]), int(a[k])) for k in np.flatnonzero(known & (a != b))]
        if reference.truncation_recorded and policy.truncation_recorded:
            ta, tb = getattr(reference, f"{side}_truncated")[i_ref], getattr(policy, f"{side}_truncated")[i_pol]
            bad += [(int(common[k]), f"{side}_truncated", bool(tb[k]), bool(ta[k])) for k in np.flatnonzero(ta != tb)]
    if not bad:
        return []
    n_pairs = len({b[0] for b in bad})
    index, field, pol_value, ref_value = min(bad, key=lambda b: b[0])  # the first pair; token counts first
    return [
        f"record {index}: {field} is {pol_value!r} in {pol_name} but {ref_value!r} in {ref_name} ({n_pairs} of "
        f"{common.size} joined pairs differ in token counts or truncation flags)"
    ]

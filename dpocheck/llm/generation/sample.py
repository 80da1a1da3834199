"""On-policy samples: K seeded responses per prompt with their log-probs, ready to be paired and scored.

Each sample row records two log-probabilities of the generated token ids:

* ``logp_sum`` / ``logp_mean`` — under the model itself (temperature 1, no top-k/top-p), **recomputed by a
  forward pass** over prompt + generated ids with the log-prob kernel of :mod:`dpocheck.llm.scoring.kernels`. This is
  log π(y|x) of the policy that sampled, the quantity the paper's δ's use.
* ``sampler_logp_sum`` / ``sampler_logp_mean`` — under the distribution actually sampled from, i.e. generate's
  *processed* scores (after temperature, top-k and top-p). It equals ``logp_sum`` (up to fp rounding) only when
  temperature = 1 and no top-k/top-p is set; ``sampler_is_model`` says whether that is the case.

The generated ids include the end-of-sequence token when the model stopped (``finished``), as the scorer's
chat-template rule includes the end-of-turn marker. ``response`` is the decoded text without special tokens;
``retokenizes`` says whether re-tokenising prompt + response (the way ``dpocheck score`` does) gives back the
same ids, so that scoring the text later reproduces ``logp_sum``.

Seeding: prompt i is sampled with a generator seeded by (seed, i), so results do not depend on which prompts
ran before (a resumed run equals an uninterrupted one). Output: JSONL rewritten atomically after every prompt,
plus ``<out>.manifest.json`` (model, settings); ``resume=True`` keeps prompts that already have all K rows.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpocheck._io import read_jsonl, write_jsonl_atomic
from dpocheck.errors import InputError
from dpocheck.llm.data.fields import unicode_problem
from dpocheck.llm.data.load import input_file
from dpocheck.llm.data.types import ChatMessages
from dpocheck.llm.manifest import check_output, data_identity, open_output, sidecar_path
from dpocheck.llm.models import pad_token_id
from dpocheck.llm.scoring.encode import tokenize_with_boundary
from dpocheck.llm.scoring.kernels import score_sequences
from dpocheck.llm.scoring.render import render_prompt, render_texts, resolve_chat_template

PAIR_MODES = ("all", "best-worst")
TOOL = "sample"


@dataclass
class SampleSettings:
    """Sampling settings (recorded in the manifest; resume requires them unchanged)."""

    k: int = 4
    seed: int = 0
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    chat_template: str = "auto"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def sampler_is_model(self) -> bool:
        """True when the sampling distribution is the model's own (temperature 1, no top-k/top-p)."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0


def read_prompts(path: str | os.PathLike[str], limit: int | None = None) -> list[str | ChatMessages]:
    """Prompts from a ``.txt`` file (one per non-blank line) or JSONL (optionally gzip) with a ``prompt`` field.

    A JSONL prompt may be text or a list of ``{"role", "content"}`` messages; ``instruction`` (AlpacaEval) is
    accepted when ``prompt`` is absent. Any bad prompt (not UTF-8, not JSON, a missing or empty field, text that is
    not valid Unicode such as a lone surrogate) is an
    :class:`InputError` naming the file, the record (0-based, non-blank lines) and the field: a sampling run
    has no skip policy, since a missing prompt would shift every later prompt's seed.
    """
    p = input_file(path, "prompts file", "JSONL or .txt, optionally .gz")
    with open(p, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(p, "rb") if gz else open(p, "rb") as fh:
            data = fh.read()
    except (EOFError, OSError) as err:
        raise InputError(f"{p}: cannot be read ({err})") from err
    raw_lines = [ln for ln in data.split(b"\n") if ln.strip()]
    if not raw_lines:
        raise InputError(f"{p}: contains no prompts")
    name = p.name.removesuffix(".gz")
    prompts: list[str | ChatMessages] = []
    for i, raw in enumerate(raw_lines):
        if limit is not None and len(prompts) >= limit:
            break
        where = f"{p}: record {i}"
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raise InputError(f"{where}: is not valid UTF-8 ({err.reason})") from None
        if name.endswith(".txt"):
            prompts.append(line)
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg})") from None
        except (ValueError, RecursionError) as err:
            raise InputError(f"{where}: cannot be read as JSON ({type(err).__name__})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{where}: must be a JSON object")
        field_name = "prompt" if "prompt" in rec else "instruction" if "instruction" in rec else None
        if field_name is None:
            raise InputError(f"{where}: field 'prompt' is missing")
        value = rec[field_name]
        if isinstance(value, str):
            if not value.strip():
                raise InputError(f"{where}: field '{field_name}' is empty")
        elif isinstance(value, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        ):
            if not value:
                raise InputError(f"{where}: field '{field_name}' is an empty message list")
        else:
            raise InputError(f"{where}: field '{field_name}' must be text or a list of chat messages")
        texts = [value] if isinstance(value, str) else [m["content"] for m in value]
        problem = next((q for q in map(unicode_problem, texts) if q), None)
        if problem:  # the tokenizer cannot take it
            raise InputError(f"{where}: field '{field_name}' {problem}")
        prompts.append(value)
    return prompts


def _prompt_ids(tokenizer: Any, prompt: str | ChatMessages, use_chat_template: bool) -> list[int]:
    text = render_prompt(tokenizer, prompt, use_chat_template)
    ids = list(tokenizer(text, add_special_tokens=not use_chat_template)["input_ids"])
    if use_chat_template:
        return ids
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids


def sample_prompt(
    model: Any,
    tokenizer: Any,
    prompt: str | ChatMessages,
    prompt_index: int,
    settings: SampleSettings,
) -> list[dict[str, Any]]:
    """K samples for one prompt (seeded by (seed, prompt_index)), each with model and sampler log-probs."""
    import torch

    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    device = next(model.parameters()).device
    p_ids = _prompt_ids(tokenizer, prompt, use_tpl)
    if not p_ids:
        raise ValueError(f"record {prompt_index}: field 'prompt' has no tokens")
    eos = tokenizer.eos_token_id
    pad = pad_token_id(tokenizer)
    torch.manual_seed(settings.seed * 1_000_003 + prompt_index)
    gen_kwargs: dict[str, Any] = {
        "do_sample": True,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k if settings.top_k > 0 else None,
        "max_new_tokens": settings.max_new_tokens,
        "num_return_sequences": settings.k,
        "output_scores": True,
        "return_dict_in_generate": True,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }
    with torch.inference_mode():
        out = model.generate(torch.tensor([p_ids], device=device), **gen_kwargs)
    gen_t = out.sequences[:, len(p_ids) :]
    gen = gen_t.tolist()
    step_logp = torch.stack(  # [K, T]: log-prob of each generated token under the processed scores
        [s.double().log_softmax(-1).gather(-1, gen_t[:, t : t + 1]).squeeze(-1) for t, s in enumerate(out.scores)],
        dim=1,
    )
    rows = []
    for j in range(settings.k):
        ids = gen[j]
        n = next((t + 1 for t, tok in enumerate(ids) if tok == eos), len(ids))
        ids = ids[:n]
        finished = bool(ids) and ids[-1] == eos
        sampler_sum = float(step_logp[j, :n].sum())
        with torch.inference_mode():
            fwd = score_sequences(model, [(p_ids + ids, len(p_ids))], pad_id=pad)[0]
        text_ids = ids[:-1] if finished else ids
        response = tokenizer.decode(text_ids, skip_special_tokens=True)
        retok = False
        if response.strip():
            pt, full = render_texts(tokenizer, prompt, response, use_tpl)
            r_ids, r_start, _ = tokenize_with_boundary(tokenizer, pt, full, not use_tpl)
            retok = r_ids == p_ids + ids and r_start == len(p_ids)
        rows.append(
            {
                "prompt_index": prompt_index,
                "sample_index": j,
                "prompt": prompt,
                "response": response,
                "response_token_ids": ids,
                "tokens": n,
                "finished": finished,
                "logp_sum": fwd.logp_sum,
                "logp_mean": fwd.logp_mean,
                "logp_source": "forward_pass",
                "sampler_logp_sum": sampler_sum,
                "sampler_logp_mean": sampler_sum / n,
                "sampler_is_model": settings.sampler_is_model,
                "retokenizes": retok,
                "empty": not response.strip(),
                "seed": settings.seed,
            }
        )
    return rows


def sample_to_file(
    model: Any,
    tokenizer: Any,
    prompts: list[str | ChatMessages],
    out: str | os.PathLike[str],
    settings: SampleSettings,
    *,
    resume: bool = False,
    show_progress: bool = True,
    model_path: str = "",
    prompts_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Sample every prompt into ``out`` (JSONL, atomically rewritten after each prompt); returns counts.

    The output goes through the output protocol (:mod:`dpocheck.llm.manifest`, sidecar ``OUT.manifest.json``):
    an existing output is refused unless ``resume`` with the same model and settings, and prompts that begin with
    the ones already sampled (a resumed run may add prompts at the end).
    """
    from tqdm import tqdm

    out_p = Path(out)
    fingerprint: dict[str, Any] = {"model": {"path": model_path}, "settings": asdict(settings)}
    extra: dict[str, Any] = {"n_prompts": len(prompts)}
    if prompts_path is not None:  # a resumed run may add prompts at the end: checked prompt by prompt below
        extra["prompts"] = data_identity(prompts_path)
    protocol = dict(tool=TOOL, resume=resume, outputs=(out_p,), where=str(out_p))
    check_output(sidecar_path(out_p), fingerprint=fingerprint, **protocol)  # refusals first, before any write
    rows: list[dict[str, Any]] = []
    if out_p.exists():
        by_prompt: dict[int, list[dict[str, Any]]] = {}
        for r in read_jsonl(out_p):
            i = r["prompt_index"]
            if i >= len(prompts) or prompts[i] != r["prompt"]:
                raise InputError(
                    f"refusing to resume {out_p}: prompt {i} was sampled from another prompt than record {i} of "
                    "this prompts file"
                )
            by_prompt.setdefault(i, []).append(r)
        rows = [r for i in sorted(by_prompt) if len(by_prompt[i]) == settings.k for r in by_prompt[i]]
    done = {r["prompt_index"] for r in rows}
    todo = [i for i in range(len(prompts)) if i not in done]
    run = open_output(sidecar_path(out_p), fingerprint, extra=extra, **protocol)
    if run.previous_failure:
        print(f"dpocheck sample: {run.previous_failure}", file=sys.stderr)
    with run.guard():
        for i in tqdm(todo, desc="sample", unit="prompt", file=sys.stderr, disable=not show_progress):
            rows += sample_prompt(model, tokenizer, prompts[i], i, settings)
            write_jsonl_atomic(out_p, rows)
        if not todo:
            write_jsonl_atomic(out_p, rows)
        run.complete({"prompts": len(prompts), "samples": len(rows)})
    return {
        "out": str(out_p),
        "prompts": len(prompts),
        "sampled_now": len(todo),
        "samples": len(rows),
        "empty": sum(r["empty"] for r in rows),
        "unfinished": sum(not r["finished"] for r in rows),
        "logp_source": "forward_pass (model, temperature 1); sampler_logp_*: generate's processed scores",
    }


def form_pairs(
    samples: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mode: str = "all",
    reward_field: str | None = None,
) -> dict[str, Any]:
    """Write TRL-style pair records (prompt, chosen, rejected) from a samples file; returns counts.

    mode ``all``: every pair of distinct non-empty responses of a prompt; with ``reward_field`` the higher
    reward is ``chosen`` (ties skipped) and ``score_chosen``/``score_rejected`` are written (so Δr* is their
    difference), without it the lower sample index is ``chosen`` (an unlabelled pair, ``labelled: false``).
    mode ``best-worst``: one pair per prompt, highest vs lowest reward (needs ``reward_field``).
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"mode must be one of {PAIR_MODES}, got {mode!r}")
    if mode == "best-worst" and reward_field is None:
        raise ValueError("pair mode 'best-worst' needs a reward field")
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for n, r in enumerate(read_jsonl(samples)):
        if reward_field is not None:
            v = r.get(reward_field)
            if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
                raise ValueError(f"sample row {n}: field '{reward_field}' must be a number, got {v!r}")
        by_prompt.setdefault(r["prompt_index"], []).append(r)
    records: list[dict[str, Any]] = []
    skipped = {"empty": 0, "duplicate_response": 0, "reward_tie": 0}
    for i in sorted(by_prompt):
        cands = []
        seen: set[str] = set()
        for r in sorted(by_prompt[i], key=lambda r: r["sample_index"]):
            if r["empty"]:
                skipped["empty"] += 1
            elif r["response"] in seen:
                skipped["duplicate_response"] += 1
            else:
                seen.add(r["response"])
                cands.append(r)
        if mode == "best-worst":
            if len(cands) < 2:
                continue
            ordered = sorted(cands, key=lambda r: (r[reward_field], -r["sample_index"]))
            combos = [(ordered[-1], ordered[0])]
        else:
            combos = list(itertools.combinations(cands, 2))
        for a, b in combos:
            rec: dict[str, Any] = {"prompt": a["prompt"], "prompt_index": i}
            if reward_field is not None:
                if a[reward_field] == b[reward_field]:
                    skipped["reward_tie"] += 1
                    continue
                hi, lo = (a, b) if a[reward_field] > b[reward_field] else (b, a)
                rec.update(chosen=hi["response"], rejected=lo["response"])
                rec.update(score_chosen=hi[reward_field], score_rejected=lo[reward_field])
                rec.update(chosen_sample=hi["sample_index"], rejected_sample=lo["sample_index"], labelled=True)
            else:
                rec.update(chosen=a["response"], rejected=b["response"], labelled=False)
                rec.update(chosen_sample=a["sample_index"], rejected_sample=b["sample_index"])
            records.append(rec)
    write_jsonl_atomic(Path(out), records)
    return {"pairs_out": str(out), "pairs": len(records), "mode": mode, "skipped": skipped}

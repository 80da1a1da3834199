"""On-policy samples: K seeded responses per prompt with their log-probs, ready to be rewarded, paired and scored.

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

Batching and seeding: ``batch_size`` prompts share one ``generate`` call (left-padded, K samples each), and the
batches are fixed by prompt index — [0, B), [B, 2B), … (:func:`batch_plan`). Each call is seeded by (seed, index
of its first prompt). One random stream serves the whole batch and padding changes the arithmetic, so a prompt's
samples depend on the batch it is in: **the same prompts, settings and batch size give the same samples**
(``batch_size`` is part of the settings a resume must share); with ``batch_size=1`` prompt i is seeded by
(seed, i) alone and its samples do not depend on any other prompt. On CUDA, bit-identical repeats also need
deterministic kernels (the usual caveat of sampling on a GPU).

Output: rows are appended per batch (flushed and fsynced) to ``OUT.partial``; the finished file ``OUT`` (sorted
by prompt, then sample) is written atomically, plus ``OUT.manifest.json`` (model, settings). ``resume=True``
continues from ``OUT.partial`` after a kill (a torn last line is dropped) or from a finished ``OUT`` with prompts
added at the end; a batch is kept only when all its prompts have K rows, else it is sampled again whole, so a
resumed run equals an uninterrupted one with the same batch size.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dpocheck._io import jsonl_text, read_jsonl, read_partial_jsonl, write_jsonl_atomic, write_text_atomic
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
    batch_size: int = 1  # prompts per generate call (see the module docstring: it changes the samples)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
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


def prompt_token_ids(tokenizer: Any, prompt: str | ChatMessages, use_chat_template: bool) -> list[int]:
    """The token ids the model continues for ``prompt`` (the one renderer's prompt text; BOS when plain)."""
    text = render_prompt(tokenizer, prompt, use_chat_template)
    ids = list(tokenizer(text, add_special_tokens=not use_chat_template)["input_ids"])
    if use_chat_template:
        return ids
    if not ids and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id]
    return ids


def batch_seed(settings: SampleSettings, first_prompt_index: int) -> int:
    """The torch seed of the ``generate`` call whose first prompt is ``first_prompt_index``."""
    return settings.seed * 1_000_003 + first_prompt_index


def generate_samples(
    model: Any, prompt_ids: Sequence[Sequence[int]], settings: SampleSettings, seed: int, eos: int | None, pad: int
) -> tuple[list[list[int]], list[float]]:
    """K samples for each of a batch of tokenised prompts in one ``generate`` call (left-padded, seeded by ``seed``).

    Returns, prompt-major (row b·K + j is sample j of prompt b), the generated ids cut after the first EOS (kept)
    and the summed log-prob of those ids under generate's processed scores (the sampler's distribution). The
    token-level core of :func:`sample_batch`, also what ``benchmarks/gpu_suite.py`` times.
    """
    import torch

    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for b, p in enumerate(prompt_ids):
        ids[b, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[b, width - len(p) :] = 1
    torch.manual_seed(seed)
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
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
        gen_t = out.sequences[:, width:]
        step_logp = torch.stack(  # [B·K, T]: log-prob of each generated token under the processed scores
            [s.double().log_softmax(-1).gather(-1, gen_t[:, t : t + 1]).squeeze(-1) for t, s in enumerate(out.scores)],
            dim=1,
        )
        generated, sampler_sums = [], []
        for row, step in zip(gen_t.tolist(), step_logp, strict=True):
            n = next((t + 1 for t, tok in enumerate(row) if tok == eos), len(row))
            generated.append(row[:n])
            sampler_sums.append(step[:n])
        sums = torch.stack([s.sum() for s in sampler_sums]).cpu().tolist() if sampler_sums else []
    return generated, sums


def sample_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | ChatMessages],
    prompt_indices: Sequence[int],
    settings: SampleSettings,
) -> list[dict[str, Any]]:
    """K samples for each prompt of a batch (one ``generate`` call, seeded by the batch's first prompt index),
    each with model and sampler log-probs; rows prompt-major."""
    import torch

    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    all_ids = []
    for prompt, i in zip(prompts, prompt_indices, strict=True):
        p_ids = prompt_token_ids(tokenizer, prompt, use_tpl)
        if not p_ids:
            raise InputError(f"record {i}: field 'prompt' has no tokens")
        all_ids.append(p_ids)
    eos = tokenizer.eos_token_id
    pad = pad_token_id(tokenizer)
    seed = batch_seed(settings, prompt_indices[0])
    generated, sampler_sums = generate_samples(model, all_ids, settings, seed, eos, pad)
    rows = []
    k = settings.k
    for b, (prompt, i, p_ids) in enumerate(zip(prompts, prompt_indices, all_ids, strict=True)):
        gens = generated[b * k : (b + 1) * k]
        with torch.inference_mode():  # log π(y|x) of the model itself: one right-padded forward of the K samples
            fwd = score_sequences(model, [(p_ids + ids, len(p_ids)) for ids in gens], pad_id=pad)
        for j, ids in enumerate(gens):
            n = len(ids)
            finished = bool(ids) and ids[-1] == eos
            text_ids = ids[:-1] if finished else ids
            response = tokenizer.decode(text_ids, skip_special_tokens=True)
            retok = False
            if response.strip():
                pt, full = render_texts(tokenizer, prompt, response, use_tpl)
                r_ids, r_start, _ = tokenize_with_boundary(tokenizer, pt, full, not use_tpl)
                retok = r_ids == p_ids + ids and r_start == len(p_ids)
            sampler_sum = sampler_sums[b * k + j]
            rows.append(
                {
                    "prompt_index": i,
                    "sample_index": j,
                    "prompt": prompt,
                    "response": response,
                    "response_token_ids": ids,
                    "tokens": n,
                    "finished": finished,
                    "logp_sum": fwd[j].logp_sum,
                    "logp_mean": fwd[j].logp_mean,
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


def sample_prompt(
    model: Any,
    tokenizer: Any,
    prompt: str | ChatMessages,
    prompt_index: int,
    settings: SampleSettings,
) -> list[dict[str, Any]]:
    """K samples for one prompt alone (a batch of one, seeded by (seed, prompt_index))."""
    return sample_batch(model, tokenizer, [prompt], [prompt_index], settings)


def batch_plan(n_prompts: int, batch_size: int) -> list[list[int]]:
    """The fixed ``generate`` batches over prompt indices: [0, B), [B, 2B), … (the unit of seeding and resume)."""
    return [list(range(k, min(k + batch_size, n_prompts))) for k in range(0, n_prompts, batch_size)]


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
    stop_after_batches: int | None = None,
) -> dict[str, Any]:
    """Sample every prompt into ``out`` (JSONL, see the module docstring); returns counts.

    The output goes through the output protocol (:mod:`dpocheck.llm.manifest`, sidecar ``OUT.manifest.json``):
    an existing output is refused unless ``resume`` with the same model and settings, and prompts that begin with
    the ones already sampled (a resumed run may add prompts at the end). ``stop_after_batches`` simulates a kill
    (for tests): the run stops with ``OUT.partial`` left behind and ``complete: False`` in the counts.
    """
    from tqdm import tqdm

    out_p = Path(out)
    partial = out_p.with_name(out_p.name + ".partial")
    fingerprint: dict[str, Any] = {"model": {"path": model_path}, "settings": asdict(settings)}
    extra: dict[str, Any] = {"n_prompts": len(prompts)}
    if prompts_path is not None:  # a resumed run may add prompts at the end: checked prompt by prompt below
        extra["prompts"] = data_identity(prompts_path)
    protocol = dict(tool=TOOL, resume=resume, outputs=(out_p, partial), where=str(out_p))
    check_output(sidecar_path(out_p), fingerprint=fingerprint, **protocol)  # refusals first, before any write
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    source = partial if partial.exists() else out_p if out_p.exists() else None
    for r in read_partial_jsonl(source) if source is not None else []:
        i = r["prompt_index"]
        if i >= len(prompts) or prompts[i] != r["prompt"]:
            raise InputError(
                f"refusing to resume {out_p}: prompt {i} was sampled from another prompt than record {i} of "
                "this prompts file"
            )
        by_prompt.setdefault(i, []).append(r)
    plan = batch_plan(len(prompts), settings.batch_size)
    # a batch is kept only when every one of its prompts has all K rows; otherwise it is sampled again whole
    # (its seed and padding depend on the whole batch), so a resumed run equals an uninterrupted one
    done = [b for b in plan if all(len(by_prompt.get(i, ())) == settings.k for i in b)]
    rows = [r for b in done for i in b for r in sorted(by_prompt[i], key=lambda r: r["sample_index"])]
    todo = [b for b in plan if b not in done]
    complete = True
    n_now = 0
    run = open_output(sidecar_path(out_p), fingerprint, extra=extra, **protocol)
    if run.previous_failure:
        print(f"dpocheck sample: {run.previous_failure}", file=sys.stderr)
    with run.guard():
        write_text_atomic(partial, jsonl_text(rows))  # the kept rows only (drops those of incomplete batches)
        bar = tqdm(total=sum(map(len, todo)), desc="sample", unit="prompt", file=sys.stderr, disable=not show_progress)
        try:
            with open(partial, "a", encoding="utf-8") as fh:
                for n_batches, b in enumerate(todo, start=1):
                    new = sample_batch(model, tokenizer, [prompts[i] for i in b], b, settings)
                    fh.write(jsonl_text(new))
                    fh.flush()
                    os.fsync(fh.fileno())
                    rows += new
                    n_now += len(b)
                    bar.update(len(b))
                    if stop_after_batches is not None and n_batches >= stop_after_batches and n_batches < len(todo):
                        complete = False
                        break
        finally:
            bar.close()
        if complete:
            rows.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
            write_jsonl_atomic(out_p, rows)
            partial.unlink()
            run.complete({"prompts": len(prompts), "samples": len(rows)})
    return {
        "out": str(out_p),
        "complete": complete,
        "prompts": len(prompts),
        "sampled_now": n_now,
        "samples": len(rows),
        "batch_size": settings.batch_size,
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
    rewards: Mapping[tuple[int, int], float] | None = None,
) -> dict[str, Any]:
    """Write TRL-style pair records (prompt, chosen, rejected) from a samples file; returns counts.

    ``rewards``: (prompt_index, sample_index) → reward, put into each sample row's ``reward_field`` (e.g. the
    rows of :func:`~dpocheck.llm.generation.reward.reward_samples_to_file`); every sample needs one.

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
    if rewards is not None and reward_field is None:
        raise ValueError("rewards need a reward_field to be stored in")
    for n, r in enumerate(read_jsonl(samples)):
        if rewards is not None:
            key = (r["prompt_index"], r["sample_index"])
            if key not in rewards:
                raise ValueError(f"sample row {n}: no reward for prompt {key[0]}, sample {key[1]}")
            r[reward_field] = rewards[key]
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

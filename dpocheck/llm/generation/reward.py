"""``dpocheck reward``: the reward gap Δr* = r(y_w) − r(y_l) from a local sequence-classification model.

The model is a Hugging Face ``AutoModelForSequenceClassification`` with one output (``num_labels=1``) loaded
from a local folder (safetensors preferred; no hub access; no ``trust_remote_code`` unless asked). Its scalar
output on (prompt, response) is read as the reward r, and Δr* = r(y_w) − r(y_l) is the Bradley–Terry reward
gap that C2's violation check (β·δ_ref + Δr* ≤ 0) needs; ``dpocheck violations --delta-reward FILE`` joins it
on ``index``.

Text given to the reward model: the full text of :func:`dpocheck.llm.scoring.render.render_texts` — the same text whose
response tokens ``dpocheck score`` scores, so δ_ref and Δr* read every pair the same way (chat template when the
tokenizer has one and ``chat_template`` is ``auto`` or ``model``; HH-style plain text otherwise).

Bad records follow the readers' one default (:mod:`dpocheck.llm.data.load`): skipped and counted by reason
(``on_error="skip"``), or an error naming file, record and field (``"raise"``). The model folder, the output
path and the data are all checked before the weights load.

``max_length`` follows the one context rule of every command that reads a model
(:func:`~dpocheck.llm.scoring.settings.cap_max_length`): None (``--max-length 0``) is the model's context, and a
larger value is capped at it. Sequences longer than ``max_length`` tokens are cut from the *left* (the end, where
the response is, is what a reward model reads) and flagged ``*_truncated``. Batches are right-padded; the model
pools its last non-pad token as usual.

Output: a JSONL file, one row per pair sorted by ``index``: ``index``, ``reward_chosen``, ``reward_rejected``,
``delta_reward``, ``reward_source``, ``chosen_truncated``, ``rejected_truncated``, ``subset``. While running,
rows are appended (flushed and fsynced per batch) to ``OUT.partial``; the finished file is written atomically.
``resume=True`` continues from ``OUT.partial`` after a kill (a torn last line is dropped) and refuses to mix
runs whose model, data or settings differ (the fingerprint of ``OUT.manifest.json``, written by the one output
protocol of :mod:`dpocheck.llm.manifest`; ``overwrite=True`` starts again).

Single samples (the on-policy flow, :mod:`dpocheck.llm.generation.onpolicy`): :func:`reward_samples_to_file` gives
r(x, y) of every row of a ``dpocheck sample`` file, through the same renderer, batches, partial file and resume
(manifest tool ``reward-samples``); best-vs-worst pairs then carry Δr* = r(y_w) − r(y_l).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpocheck._io import jsonl_text, read_partial_jsonl, write_jsonl_atomic, write_text_atomic
from dpocheck.errors import InputError
from dpocheck.llm.data.load import load_pairs
from dpocheck.llm.data.types import PreferencePair
from dpocheck.llm.manifest import OutputRun, check_output, data_identity, open_output, sidecar_path
from dpocheck.llm.preflight import check_model_path, check_output_path
from dpocheck.llm.scoring.encode import ScoringError, untokenizable
from dpocheck.llm.scoring.render import render_texts, resolve_chat_template
from dpocheck.llm.scoring.settings import CHAT_TEMPLATE_CHOICES, cap_max_length, context_length

TOOL = "reward"
SAMPLE_TOOL = "reward-samples"
RESUME_HINT = "pass --resume to continue it, --overwrite to replace it, or choose a new --out"
STRAY_HINT = "pass --overwrite to replace it or choose a new --out"


@dataclass
class RewardSettings:
    """Everything that changes the rewards (recorded in the manifest; ``resume`` checks it)."""

    batch_size: int = 8
    max_length: int | None = 2048  # None: the model's context
    chat_template: str = "auto"
    dtype: str = "auto"
    format: str = "auto"
    prompt_style: str = "text"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"max_length must be >= 2 (None: the model's context), got {self.max_length}")
        if self.chat_template not in CHAT_TEMPLATE_CHOICES:
            raise InputError(f"chat_template must be one of {CHAT_TEMPLATE_CHOICES}, got {self.chat_template!r}")


def load_reward_model(
    path: str | os.PathLike[str], *, dtype: str = "auto", device: Any = None, trust_remote_code: bool = False
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, device) for a local sequence-classification reward model with one output."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from dpocheck.llm.models import default_device, load_tokenizer, resolve_dtype

    os.environ["HF_HUB_OFFLINE"] = "1"
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise FileNotFoundError(f"reward model {p} is not a local Hugging Face folder with a config.json")
    config = AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=trust_remote_code)
    if getattr(config, "num_labels", 1) != 1:
        raise ValueError(f"a reward model has one output (num_labels=1); {p} has num_labels={config.num_labels}")
    dev = torch.device(device) if device is not None else default_device()
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        "dtype": resolve_dtype(dtype, dev),
    }
    if any(p.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    model = AutoModelForSequenceClassification.from_pretrained(str(p), **kwargs)
    tokenizer = load_tokenizer(p, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, dev


def score_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int | None, add_special_tokens: bool
) -> tuple[list[float], list[bool]]:
    """Rewards (float) and truncation flags for a batch of texts (right-padded, left-truncated)."""
    import torch

    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
    enc = tokenizer(
        list(texts),
        add_special_tokens=add_special_tokens,
        padding=True,
        truncation=max_length is not None,
        max_length=max_length,
        return_tensors="pt",
    )
    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev)).logits
    values = logits.float().reshape(len(texts), -1)[:, 0].cpu().tolist()
    truncated = [max_length is not None and n > max_length for n in lengths]
    return values, truncated


def tokenizable_pairs(
    tokenizer: Any, pairs: Sequence[PreferencePair], settings: RewardSettings, on_error: str, skipped: dict[str, int]
) -> list[PreferencePair]:
    """The pairs whose two texts the tokenizer takes; any other is a bad record (reason ``untokenizable_text``,
    :func:`~dpocheck.llm.scoring.encode.untokenizable`): counted into ``skipped`` or raised (``on_error``)."""
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    kept = []
    for p in pairs:
        try:
            for name, response in (("chosen", p.chosen), ("rejected", p.rejected)):
                try:
                    tokenizer(render_texts(tokenizer, p.prompt, response, use_tpl)[1], add_special_tokens=not use_tpl)
                except Exception as err:
                    raise untokenizable(tokenizer, p, name, err) from err
        except ScoringError as err:
            if on_error == "raise":
                raise
            skipped[err.reason] = skipped.get(err.reason, 0) + 1
            continue
        kept.append(p)
    return kept


@dataclass
class RewardRun:
    """What :func:`reward_file` did (pairs loaded, scored in this call, done by an earlier run)."""

    out: Path
    n_pairs: int
    n_scored_now: int
    n_done_before: int
    seconds: float
    load_summary: str
    notes: list[str] = field(default_factory=list)


def reward_pairs_to_file(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    out: str | os.PathLike[str],
    settings: RewardSettings,
    *,
    identity: dict[str, Any],
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    stop_after_batches: int | None = None,
    model_name: str = "reward_model",
    extra: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Score every pair's two responses and write the rows; returns (pairs scored now, pairs done before).

    ``identity``: the ``model`` and ``data`` parts of the manifest's fingerprint (the settings are added);
    ``extra``: other manifest keys. The output goes through the output protocol (:mod:`dpocheck.llm.manifest`):
    an existing output is refused unless ``resume`` (same fingerprint) or ``overwrite``.
    ``stop_after_batches`` simulates a kill (for tests): the run stops with ``OUT.partial`` left behind.
    """
    out_p = Path(out)
    partial = out_p.with_name(out_p.name + ".partial")
    manifest_p = sidecar_path(out_p)
    if overwrite:
        for f in (manifest_p, partial, out_p):
            f.unlink(missing_ok=True)
    fingerprint = {**identity, "settings": asdict(settings)}
    run = open_output(
        manifest_p,
        fingerprint,
        tool=TOOL,
        resume=resume,
        extra={"row_keys": list(ROW_KEYS), **(extra or {})},
        outputs=(partial, out_p),
        where=str(out_p),
        hint=RESUME_HINT,
        stray_hint=STRAY_HINT,
    )
    if run.previous_failure:
        print(f"dpocheck reward: {run.previous_failure}", file=sys.stderr)
    with run.guard():
        done: dict[int, dict[str, Any]] = {}
        source = partial if partial.exists() else out_p if out_p.exists() else None
        if source is not None:
            done = {int(r["index"]): r for r in read_partial_jsonl(source)}
        if out_p.exists() and not partial.exists():  # a finished file being resumed: continue from its rows
            write_text_atomic(partial, jsonl_text(done[k] for k in sorted(done)))
        return _reward_batches(
            model, tokenizer, pairs, out_p, partial, run, done, settings, show_progress, stop_after_batches, model_name
        )


def _reward_batches(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    out_p: Path,
    partial: Path,
    run: OutputRun,
    done: dict[int, dict[str, Any]],
    settings: RewardSettings,
    show_progress: bool,
    stop_after_batches: int | None,
    model_name: str,
) -> tuple[int, int]:
    """Score the pairs not in ``done`` batch by batch into ``partial``; then the finished file, atomically."""

    def texts(p: PreferencePair, use_tpl: bool) -> list[str]:
        return [render_texts(tokenizer, p.prompt, y, use_tpl)[1] for y in (p.chosen, p.rejected)]

    def row(p: PreferencePair, values: list[float], trunc: list[bool]) -> dict[str, Any]:
        rc, rr = values
        if not (math.isfinite(rc) and math.isfinite(rr)):
            raise InputError(f"record {p.index}: the reward model returned a non-finite reward")
        return {
            "index": p.index,
            "reward_chosen": rc,
            "reward_rejected": rr,
            "delta_reward": rc - rr,
            "reward_source": f"reward_model:{model_name}",
            "chosen_truncated": trunc[0],
            "rejected_truncated": trunc[1],
            "subset": p.subset,
        }

    # length-sorted batches (less padding); final rows by index
    order = sorted(pairs, key=lambda p: (len(p.chosen) + len(p.rejected), p.index))
    items = _Items(order, sorted(pairs, key=lambda p: p.index), lambda p: p.index, texts, row, "pair")
    return _score_in_batches(
        model,
        tokenizer,
        items,
        out_p,
        partial,
        run,
        done,
        settings,
        show_progress,
        stop_after_batches,
        {"pairs": len(pairs)},
    )


@dataclass
class _Items:
    """What :func:`_score_in_batches` rewards: items in batch-plan order and in output order, each item's key,
    the texts the reward model reads and the output row made of their rewards."""

    planned: Sequence[Any]
    output_order: Sequence[Any]
    key: Any
    texts: Any
    row: Any
    unit: str


def _score_in_batches(
    model: Any,
    tokenizer: Any,
    items: _Items,
    out_p: Path,
    partial: Path,
    run: OutputRun,
    done: dict[Any, dict[str, Any]],
    settings: RewardSettings,
    show_progress: bool,
    stop_after_batches: int | None,
    counts: dict[str, Any],
) -> tuple[int, int]:
    """Reward the items not in ``done`` batch by batch into ``partial`` (appended, fsynced per batch); then the
    finished file, atomically, and the manifest ``complete``. Returns (items rewarded now, items done before)."""
    from tqdm import tqdm

    # a fixed batch plan over all items, so a resumed run rewards every item in the same batch as an
    # uninterrupted run would, and its output is identical
    bs = settings.batch_size
    batches = [items.planned[k : k + bs] for k in range(0, len(items.planned), bs)]
    todo = [b for b in batches if any(items.key(x) not in done for x in b)]
    n_todo = sum(1 for b in todo for x in b if items.key(x) not in done)
    n_before = len(items.planned) - n_todo
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    bar = tqdm(total=n_todo, desc="reward", unit=items.unit, file=sys.stderr, disable=not show_progress)
    n_now = 0
    try:
        with open(partial, "a", encoding="utf-8") as fh:
            for n_batches, batch in enumerate(todo, start=1):
                per_item = [items.texts(x, use_tpl) for x in batch]
                flat = [t for ts in per_item for t in ts]
                values, trunc = score_texts(model, tokenizer, flat, settings.max_length, not use_tpl)
                lines, pos = [], 0
                for x, ts in zip(batch, per_item, strict=True):
                    sl = slice(pos, pos + len(ts))
                    pos += len(ts)
                    if items.key(x) in done:
                        continue
                    row = items.row(x, values[sl], trunc[sl])
                    done[items.key(x)] = row
                    lines.append(jsonl_text([row]))
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(lines))
                n_now += len(lines)
                if stop_after_batches is not None and n_batches >= stop_after_batches:
                    return n_now, n_before
    finally:
        bar.close()
    write_jsonl_atomic(out_p, [done[items.key(x)] for x in items.output_order])
    partial.unlink()
    run.complete(counts)
    return n_now, n_before


ROW_KEYS = (
    "index",
    "reward_chosen",
    "reward_rejected",
    "delta_reward",
    "reward_source",
    "chosen_truncated",
    "rejected_truncated",
    "subset",
)


SAMPLE_ROW_KEYS = ("prompt_index", "sample_index", "reward", "truncated", "reward_source")


def reward_samples_to_file(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Mapping[str, Any]],
    out: str | os.PathLike[str],
    settings: RewardSettings,
    *,
    identity: dict[str, Any],
    resume: bool = False,
    show_progress: bool = True,
    stop_after_batches: int | None = None,
    model_name: str = "reward_model",
) -> tuple[int, int]:
    """The reward r(x, y) of every sample row (``prompt``, ``response``, ``prompt_index``, ``sample_index``, as
    ``dpocheck sample`` writes them) into ``out``: one row per sample (:data:`SAMPLE_ROW_KEYS`), sorted by prompt
    then sample; returns (samples rewarded now, samples done before).

    The text is :func:`~dpocheck.llm.scoring.render.render_texts`'s full text, as for pairs; batches, truncation,
    ``OUT.partial``, resume and the manifest (``identity``: its ``model`` and ``data`` parts) work as in
    :func:`reward_pairs_to_file`.
    """
    out_p = Path(out)
    partial = out_p.with_name(out_p.name + ".partial")
    run = open_output(
        sidecar_path(out_p),
        {**identity, "settings": asdict(settings)},
        tool=SAMPLE_TOOL,
        resume=resume,
        extra={"row_keys": list(SAMPLE_ROW_KEYS)},
        outputs=(partial, out_p),
        where=str(out_p),
        hint=RESUME_HINT,
        stray_hint=STRAY_HINT,
    )

    def key(r: Mapping[str, Any]) -> tuple[int, int]:
        return int(r["prompt_index"]), int(r["sample_index"])

    source = partial if partial.exists() else out_p if out_p.exists() else None
    done = {key(r): r for r in read_partial_jsonl(source)} if source is not None else {}
    if out_p.exists() and not partial.exists():  # a finished file being resumed: continue from its rows
        write_text_atomic(partial, jsonl_text(done[k] for k in sorted(done)))

    def texts(r: Mapping[str, Any], use_tpl: bool) -> list[str]:
        return [render_texts(tokenizer, r["prompt"], r["response"], use_tpl)[1]]

    def row(r: Mapping[str, Any], values: list[float], trunc: list[bool]) -> dict[str, Any]:
        if not math.isfinite(values[0]):
            raise InputError(f"prompt {r['prompt_index']}, sample {r['sample_index']}: non-finite reward")
        i, j = key(r)
        source = f"reward_model:{model_name}"
        return {
            "prompt_index": i,
            "sample_index": j,
            "reward": values[0],
            "truncated": trunc[0],
            "reward_source": source,
        }

    planned = sorted(samples, key=lambda r: (len(r["response"]), *key(r)))
    items = _Items(planned, sorted(samples, key=key), key, texts, row, "sample")
    with run.guard():
        return _score_in_batches(
            model,
            tokenizer,
            items,
            out_p,
            partial,
            run,
            done,
            settings,
            show_progress,
            stop_after_batches,
            {"samples": len(samples)},
        )


def reward_file(
    reward_model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: RewardSettings | None = None,
    *,
    device: Any = None,
    trust_remote_code: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    on_error: str = "skip",
    show_progress: bool = True,
    stop_after_batches: int | None = None,
) -> RewardRun:
    """Load data and reward model, score every pair into ``out`` (resumable); see the module docstring."""
    from dpocheck.llm.models import model_fingerprint

    settings = settings or RewardSettings()
    t0 = time.perf_counter()
    # everything that can be checked is checked before the weights load: model folder, output path, data
    check_model_path(reward_model, "--reward-model")
    out_p = check_output_path(out, directory=False)
    if not overwrite:
        check_output(
            sidecar_path(out_p),
            tool=TOOL,
            resume=resume,
            outputs=(out_p, out_p.with_name(out_p.name + ".partial")),
            where=str(out_p),
            hint=RESUME_HINT,
            stray_hint=STRAY_HINT,
        )
    loaded = load_pairs(
        data, settings.format, limit=settings.limit, on_error=on_error, prompt_style=settings.prompt_style
    )
    model, tokenizer, _ = load_reward_model(
        reward_model, dtype=settings.dtype, device=device, trust_remote_code=trust_remote_code
    )
    max_length, note = cap_max_length(settings.max_length, context_length(model, tokenizer))
    settings = replace(settings, max_length=max_length)
    loaded.pairs = tokenizable_pairs(tokenizer, loaded.pairs, settings, on_error, loaded.skipped)
    identity = {"model": model_fingerprint(reward_model), "data": data_identity(data, format=loaded.format)}
    now, before = reward_pairs_to_file(
        model,
        tokenizer,
        loaded.pairs,
        out,
        settings,
        identity=identity,
        resume=resume,
        overwrite=overwrite,
        show_progress=show_progress,
        stop_after_batches=stop_after_batches,
        model_name=Path(reward_model).name,
        extra={"load": {"n_records": loaded.n_records, "pairs": len(loaded.pairs), "skipped": loaded.skipped}},
    )
    notes = [note] if note else []
    return RewardRun(Path(out), len(loaded.pairs), now, before, time.perf_counter() - t0, loaded.summary(), notes)

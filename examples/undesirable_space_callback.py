"""Watch the undesirable space U (C3) from your own TRL script: a plain ``DPOTrainer`` plus dpocheck's callback.

Your training stays yours (TRL's tokenisation, loss, reference model and config); dpocheck adds one callback that,
every ``--eval-every`` steps, scores the whole training set with the current policy and writes
``OUT/eval/step-<N>.jsonl`` (per pair: δ_θ, δ_ref, in U or not, the policy's log-probs) and logs
``eval/share_in_u/sum`` … through the trainer's own logging (``trainer.state.log_history``, TensorBoard, W&B).

Run it at toy size (a tiny random model, seconds on a CPU)::

    python -c "from dpocheck.llm.models import save_toy_model; save_toy_model('toy')"
    python examples/undesirable_space_callback.py --model toy --data pairs.jsonl --out runs/example --max-steps 4

(``pairs.jsonl``: TRL-style records ``{"prompt": …, "chosen": …, "rejected": …}``; any format ``dpocheck score``
reads works.) With a real model, pass its Hugging Face folder as ``--model``. The steps:

1. read the pairs with dpocheck's reader (``load_pairs``: bad records are skipped and counted);
2. score the reference log-probs with dpocheck's packed scorer, in memory (``score_pairs``, what ``dpocheck
   score`` writes; to reuse a ``dpocheck score --out REF`` folder instead: ``read_jsonl("REF/scores.jsonl")``);
3. tokenise the pairs as dpocheck does (``encode_pair``, the same settings as step 2) and join them with the
   reference rows (``build_training_rows``): the rows the callback scores;
4. train with TRL's ``DPOTrainer`` on the text pairs, the callback attached.

A plain DPOTrainer trains summed log-probs, the callback's default convention (``convention="sum"``).
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> dict:
    """Train, watching U; returns (and prints) the last ``eval/*`` metrics and where the eval files are."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a local Hugging Face model folder")
    p.add_argument("--data", required=True, help="preference pairs (JSONL, JSON or Parquet)")
    p.add_argument("--out", required=True, help="output folder (TRL's output_dir; the eval files go to OUT/eval)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--max-length", type=int, default=512, help="dpocheck's token budget per sequence")
    args = p.parse_args(argv)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dpocheck.llm.data.load import load_pairs
    from dpocheck.llm.scoring.encode import encode_pair
    from dpocheck.llm.scoring.render import resolve_chat_template
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings
    from dpocheck.llm.train import UndesirableSpaceCallback, build_training_rows

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)

    # 1. the pairs (text prompts: TRL's dataset below takes them as they are; dpocheck renders them the same way)
    pairs = load_pairs(args.data, prompt_style="text").pairs
    # 2. the reference log-probs: the model before training, scored like `dpocheck score`
    settings = ScoreSettings(max_length=args.max_length, chat_template="auto", dtype="fp32")
    model.eval()
    reference, skipped = score_pairs(model, tokenizer, pairs, settings)
    if skipped:
        print(f"skipped {len(skipped)} pairs dpocheck cannot score: {skipped[0]['error']}", file=sys.stderr)
    scored = {r["index"] for r in reference}
    pairs = [pair for pair in pairs if pair.index in scored]
    # 3. dpocheck's view of the data: its tokens joined with the reference rows (one row per pair)
    use_tpl = resolve_chat_template(tokenizer, settings.chat_template)
    encoded = [encode_pair(tokenizer, pair, use_chat_template=use_tpl, max_length=args.max_length) for pair in pairs]
    rows = build_training_rows(encoded, reference, "dpo", beta=args.beta)

    # 4. your own TRL training, with the callback
    model.train()
    dataset = Dataset.from_list([{"prompt": x.prompt, "chosen": x.chosen, "rejected": x.rejected} for x in pairs])
    config = DPOConfig(
        args.out,
        beta=args.beta,
        learning_rate=args.lr,
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = DPOTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.add_callback(UndesirableSpaceCallback(trainer, rows, eval_every=args.eval_every, out_dir=args.out))
    trainer.train()

    last = [h for h in trainer.state.log_history if "eval/share_in_u/sum" in h][-1]
    summary = {"step": last["step"], **{k: v for k, v in last.items() if k.startswith("eval/")}}
    summary["eval_files"] = f"{args.out}/eval"
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

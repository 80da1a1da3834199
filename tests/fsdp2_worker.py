"""Worker of ``tests/test_train_sharding.py``: FSDP2 (``fully_shard``) in 2 gloo processes, without accelerate.

accelerate never enables FSDP without an accelerator (it silently trains DDP), so this drives torch's FSDP2
directly, with the layout accelerate's TRANSFORMER_BASED_WRAP gives: every decoder layer a unit, then the root.
Run as ``python -m torch.distributed.run --nproc_per_node 2 tests/fsdp2_worker.py OUT_JSON [lora]``; rank 0 writes
what it measured to OUT_JSON:

* ``logps_max_abs_diff``: the packed policy forward (with gradients) of the sharded model against the same model
  unsharded, per rank on its own batch (the kernel must route the sharded model through its root forward);
* ``grad_norm``: that a backward through the sharded forward produced gradients;
* ``rows_max_abs_diff`` / ``rows_same_order``: the U callback's distributed scoring (every rank its share of the
  batches, rows gathered) on the sharded model against one process scoring the unsharded model;
* with ``lora``: the same with a PEFT LoRA adapter (bf16 base, fp32 adapters), as FSDP2 shards a LoRA run.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from dpocheck.llm.data.types import PreferencePair
    from dpocheck.llm.models import toy_model, toy_tokenizer
    from dpocheck.llm.scoring.encode import encode_pairs
    from dpocheck.llm.scoring.kernels import is_fsdp_sharded
    from dpocheck.llm.scoring.runner import score_pairs
    from dpocheck.llm.scoring.settings import ScoreSettings
    from dpocheck.llm.train import PackedPreferenceCollator, build_training_rows, policy_logps
    from dpocheck.llm.train.callback import score_rows

    lora = "lora" in sys.argv[2:]
    tok = toy_tokenizer()
    base = toy_model(tok, seed=1, tie_word_embeddings=False)
    if lora:
        from peft import LoraConfig, get_peft_model

        with torch.no_grad():  # bf16 parameters, fp32 RoPE buffers: what load_model(dtype="bf16") gives
            for p in base.parameters():
                p.data = p.data.to(torch.bfloat16)
        torch.manual_seed(2)
        base = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
        with torch.no_grad():  # a moved adapter (B != 0), so the adapters change the scores
            for name, p in base.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    words = "the capital of France is Paris sure here a short poem about sea waves roll in out dog fox".split()
    pairs = [
        PreferencePair(
            index=i,
            prompt="Q: " + " ".join(words[(3 * i + j) % len(words)] for j in range(2 + i % 3)) + "?",
            chosen=" " + " ".join(words[(i + j) % len(words)] for j in range(1 + i % 4)) + ".",
            rejected=" " + " ".join(words[(2 * i + j + 5) % len(words)] for j in range(1 + (5 * i) % 3)) + "!",
            delta_reward=None,
        )
        for i in range(7)  # an uneven split: 7 pairs, several batches, one rank has a batch fewer
    ]
    sset = ScoreSettings(max_length=64, batch_tokens=60, chat_template="none")
    with torch.no_grad():
        ref, _ = score_pairs(base, tok, pairs, sset)
    enc = encode_pairs(tok, pairs, sset, False)
    rows = build_training_rows(enc.encoded, ref, "dpo", 0.1)
    single_rows = score_rows(base, rows, tok.pad_token_id, batch_tokens=60)
    batch = PackedPreferenceCollator(tok.pad_token_id)(rows[2 * rank : 2 * rank + 2])
    with torch.no_grad():
        single = policy_logps(copy.deepcopy(base), batch)

    mesh = init_device_mesh("cpu", (world,))
    model = copy.deepcopy(base)
    if not lora:
        model.requires_grad_(True)
    inner = model.get_base_model() if lora else model
    for layer in inner.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.train()
    out = policy_logps(model, batch)
    diff = max(float((out[k].detach() - single[k]).abs().max()) for k in ("chosen_logp_sum", "rejected_logp_sum"))
    (out["chosen_logp_sum"] - out["rejected_logp_sum"]).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.sqrt(sum((g.full_tensor().float() ** 2).sum() for g in grads)))
    diffs = torch.tensor([diff])
    dist.all_reduce(diffs, op=dist.ReduceOp.MAX)
    model.eval()
    sharded_rows = score_rows(model, rows, tok.pad_token_id, batch_tokens=60, distributed=True)
    row_diff = max(
        abs(a[k] - b[k])
        for a, b in zip(sharded_rows, single_rows, strict=True)
        for k in ("chosen_logp_sum", "rejected_logp_sum", "delta_theta")
    )
    result = {
        "world": world,
        "lora": lora,
        "sharded": is_fsdp_sharded(model),
        "logps_max_abs_diff": float(diffs.item()),
        "grad_norm": grad_norm,
        "n_rows": len(sharded_rows),
        "rows_same_order": [r["index"] for r in sharded_rows] == [r["index"] for r in single_rows],
        "rows_max_abs_diff": row_diff,
    }
    if rank == 0:
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

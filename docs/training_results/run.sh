#!/bin/bash
# E2 at LLM scale pilot: sequential dpocheck train runs, resumable (skip complete, --resume partial).
export PYTHONPATH=/work/wt/e2llm PATH=/work/main/.venv/bin:$PATH DPOCHECK_DATA_DIR=/work/shared/data
D=/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz
O=/work/e2llm_pilot/out/runs
COMMON="--data $D --limit 16 --max-length 128 --batch-size 4 --epochs 2 --lr 5e-5 --eval-every 4 --save-steps 4 --threads 2 --no-progress --seed 0"
run() { name=$1; shift
  if grep -q '"status": *"complete"' $O/$name/manifest.json 2>/dev/null; then echo "skip $name"; return; fi
  res=""; [ -d $O/$name ] && res="--resume"
  echo "$(date -u +%T) start $name"
  /usr/bin/time -f "$name wall %e s" dpocheck train $COMMON "$@" --out $O/$name $res > $O/../$name.log 2>&1
  echo "$(date -u +%T) end $name rc=$?"
}
for R in 0 0.4; do
  C=""; [ "$R" != 0 ] && C="--corrupt-reference $R"
  run dpo_R$R --loss dpo --beta 0.1 --normalize sum $C
  run released_clip_R$R --loss released_clip --beta 0.1 --normalize sum $C
  run cpo_g0_R$R --loss cpo_margin --beta 2.5 --gamma 0 --normalize mean $C
  run cpo_g0.05_R$R --loss cpo_margin --beta 2.5 --gamma 0.05 --normalize mean $C
done

#!/bin/bash
# After run.sh: the cpo_margin γ*/2 and 1.5γ* entries, γ* from the γ=0 run's step-0 reference scores (Eq. 27, Δr*=0).
export PYTHONPATH=/work/wt/e2llm PATH=/work/main/.venv/bin:$PATH DPOCHECK_DATA_DIR=/work/shared/data
while kill -0 3478 2>/dev/null; do sleep 30; done
D=/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz; O=/work/e2llm_pilot/out/runs
COMMON="--data $D --limit 16 --max-length 128 --batch-size 4 --epochs 2 --lr 5e-5 --eval-every 4 --save-steps 4 --threads 2 --no-progress --seed 0"
for R in 0 0.4; do
  C=""; [ "$R" != 0 ] && C="--corrupt-reference $R"
  G=$(python -c "
from pathlib import Path
from dpocheck.llm.train.experiment import read_eval, reference_gamma_star
print(reference_gamma_star(read_eval(Path('$O/cpo_g0_R$R/eval/step-0.jsonl')), 2.5, 'mean'))")
  [ -z "$G" ] && { echo "no gamma_star for R=$R"; exit 1; }
  echo "R=$R gamma_star=$G" | tee -a $O/../gamma_star.txt
  for k in half 1.5; do
    g=$(python -c "print($G/2 if '$k'=='half' else 1.5*$G)"); name=cpo_g${k}gstar_R$R
    grep -q '"status": *"complete"' $O/$name/manifest.json 2>/dev/null && continue
    res=""; [ -d $O/$name ] && res="--resume"
    echo "$(date -u +%T) start $name gamma=$g"
    /usr/bin/time -f "$name wall %e s" dpocheck train $COMMON --loss cpo_margin --beta 2.5 --gamma $g --normalize mean $C --out $O/$name $res > $O/../$name.log 2>&1
    echo "$(date -u +%T) end $name rc=$?"
  done
done

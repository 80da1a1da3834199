#!/usr/bin/env bash
# E2 pilot with plain `dpocheck train` runs (resumable: rerun this script; finished runs are skipped).
set -u
export PATH=/work/main/.venv/bin:$PATH
DATA=/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz
COMMON="--data $DATA --limit 16 --max-length 128 --batch-size 4 --epochs 2 --lr 5e-5 --eval-every 4 --save-steps 4 --seed 0 --threads 1 --no-progress"
run() {
  name=$1; shift
  out=/work/pilot/out/$name
  if [ -f $out/manifest.json ] && grep -q '"status": "complete"' $out/manifest.json; then echo "skip $name"; return; fi
  extra=""; [ -d $out ] && extra="--resume"
  start=$(date +%s)
  dpocheck train $COMMON --out $out "$@" $extra > /work/pilot/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - start )) s" | tee -a /work/pilot/times.txt
}
mkdir -p /work/pilot/out
run dpo-sum-b0.1-R0.4 --loss dpo --beta 0.1 --corrupt-reference 0.4
run cpo-mean-b2.5-g0-R0.4 --loss cpo_margin --beta 2.5 --normalize mean --gamma 0 --corrupt-reference 0.4
run cpo-mean-b2.5-g0.05-R0.4 --loss cpo_margin --beta 2.5 --normalize mean --gamma 0.05 --corrupt-reference 0.4
run cpo-mean-b2.5-g0.5-R0.4 --loss cpo_margin --beta 2.5 --normalize mean --gamma 0.5 --corrupt-reference 0.4
run dpo-sum-b0.1-R0 --loss dpo --beta 0.1
run cpo-mean-b2.5-g0-R0 --loss cpo_margin --beta 2.5 --normalize mean --gamma 0
run cpo-mean-b2.5-g0.05-R0 --loss cpo_margin --beta 2.5 --normalize mean --gamma 0.05
echo done >> /work/pilot/times.txt

#!/bin/sh
# The Python wheels benchmarks/gpu_suite.py needs on the GPU machine, downloaded here into wheels/ (ignored by git).
# That machine has Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate, peft, pandas, pyarrow, xxhash,
# fsspec and huggingface-hub, and none of these: trl (dpocheck train's trainer), datasets and its dill and
# multiprocess (TRL's data), array-api-compat (dpocheck.theory: the loss registry and the U metrics).
# trl 1.16.0 is the range dpocheck's trainer is tested with (>=1.16,<1.17; it needs transformers>=4.56.2);
# datasets 5.2.0 is the version tested here (it needs huggingface-hub>=1.31: the machine has 1.33).
# All five are pure-Python wheels (multiprocess: its py312 build). Install there with
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
set -e
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d wheels \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 array-api-compat==1.16.0
ls wheels

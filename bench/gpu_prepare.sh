#!/usr/bin/env bash
# Prepare the GPU check (bench/gpu_math_check.sh) here, where pip is reachable: the device machine has
# torch, transformers, tokenizers, numpy, pyyaml, sympy and rich but no registry, so the other pure-Python /
# cp312 manylinux wheels dibs needs are downloaded into .gpu/whl. The five evaluation sets travel with the
# checkout (platform/tasks/data/math_eval).
# Then: run(command="bash bench/gpu_math_check.sh", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
rm -rf .gpu/whl && mkdir -p .gpu/whl
# Versions as resolved in .venv under constraints-cpu.txt.
WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
        math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2"
for w in $WHEELS; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl "$w"
done
ls .gpu/whl; du -sh .gpu

#!/usr/bin/env bash
# CUDA checks of issue 4 on a lent GPU machine (the workplace's `device` tool; Python 3.12 and torch
# 2.11+cu130 there, no OpenMM). Run from the repository root there, with the wheels in .whl/ made
# here by:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_34_x86_64 --platform manylinux_2_17_x86_64 ... -d .whl \
#     openmm==8.5.2 openmm-cuda-13==8.5.2 acellera-openmmtorch-cu13==1.10 vesin-torch==0.6.2 \
#     pdbfixer==1.12.0 mdtraj==1.11.0 ase==3.29.0 e3nn==0.6.0 tblite==0.8.0 cffi==2.0.0 pycparser
#     (+ openmmml-1.7 built from its sdist; the first run, logged in stability/gpu/, lacked tblite,
#     whose training test then ran in a second call without mdtraj, to stay under 64 MiB)
#   pip wheel --no-deps -w .whl .                               (this package)
# (charmm36*.xml and the OpenCL plugin were deleted from the openmm wheel, and vesin-torch's
# libraries for other torch versions, to fit the 64 MiB transfer.)
# What it does: the tests marked `gpu` (CUDA TorchForce vs reference, shipped potential on CUDA vs
# CPU, training on CUDA vs CPU), then villin ML/MM on the CUDA platform
# (stability/villin-gpu-hcons.yaml) for RUN_SECONDS, summarised by scripts/stability.py run-folder.
# Output under $OUT: gpu-tests.log, villin-gpu.log, villin-gpu-run.tar.gz.
RUN_SECONDS=${RUN_SECONDS:-300}
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, openmm, openmmtorch, openmmml; print('torch', torch.__version__, 'openmm', openmm.__version__, \
'platforms', [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())], \
'plugin failures', openmm.Platform.getPluginLoadFailures())"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/test_openmm.py tests/test_shipped_potential.py tests/test_training.py 2>&1 | tee "$OUT/gpu-tests.log"
timeout -s INT "$RUN_SECONDS" python3 -m openmmml_e2former.cli run stability/villin-gpu-hcons.yaml \
  --pdb stability/villin_protein.pdb -o /tmp/villin-gpu-run --platform CUDA --no-progress 2>&1 | tee "$OUT/villin-gpu.log"
python3 scripts/stability.py run-folder /tmp/villin-gpu-run 2>&1 | tail -20 | tee -a "$OUT/villin-gpu.log"
tail -3 /tmp/villin-gpu-run/stages/02-nvt/state.csv
tar czf "$OUT/villin-gpu-run.tar.gz" --exclude=system.xml -C /tmp villin-gpu-run

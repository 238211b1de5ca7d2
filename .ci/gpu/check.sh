#!/usr/bin/env bash
# There: run(command="bash .gpuwheels/check.sh", carry=[".gpuwheels"], timeout_s=480)
# after .ci/gpu/wheels.sh here. About 4 minutes on an H200 machine (16 cores).
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwheels/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$PWD:$PWD/tests
python3 -c "import torch, dask, skorch, dask_cuda; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'dask', dask.__version__, 'skorch', skorch.__version__)" | tee $OUT/versions.txt
timeout 150 python3 -m pytest tests/test_gpu.py -v -rfEs 2>&1 | tee $OUT/gpu_tests.log | tail -15
SKORCH_COMPAT_JSON=$OUT/skorch_cuda.json timeout 150 python3 tests/skorch_compat/run.py -k cuda -rfE 2>&1 | tee $OUT/skorch_cuda.log | tail -12
# The whole suite where CUDA is visible; -v names each failure as it happens,
# so the log says which failed even when the timeout cuts the summary off.
timeout ${FULL_S:-200} python3 -m pytest -v -n 8 -rfE 2>&1 | tee $OUT/full.log \
    | grep -E "FAILED|ERROR|passed|failed" | tail -20 || true

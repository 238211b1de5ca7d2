"""skorch's own tests pass with the Dask classes swapped in, but those
tests/skorch_compat/excluded.py lists with their reasons. Minutes long:
selected with ``-m slow`` only (see conftest.py)."""
import json
import os
import subprocess
import sys

import pytest

RUN = os.path.join(os.path.dirname(__file__), "skorch_compat", "run.py")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_skorchs_tests_pass_with_the_dask_classes(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, RUN, "-p", "no:logging", "--tb=line"],
        env={**os.environ, "SKORCH_COMPAT_JSON": str(out)},
        capture_output=True, text=True, timeout=1700)
    # No results: the run stopped before the tests (e.g. an exclusion that
    # names no test of skorch's suite); its output says why.
    assert out.exists(), (proc.stdout + proc.stderr)[-5000:]
    results = json.loads(out.read_text())
    failed = sorted(k for k, v in results.items() if v.startswith("failed"))
    assert not failed, proc.stdout[-5000:]
    passed = [k for k, v in results.items() if v == "passed"]
    assert len(passed) > 400  # the run did reach skorch's tests

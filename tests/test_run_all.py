"""benchmarks/run_all.py: sections stamped with their commit, goals collected
from the benchmarks that declare them (no benchmark is run here)."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import run_all  # noqa: E402


def test_only_refuses_to_keep_sections_of_another_commit(tmp_path, capsys):
    stored = {"quick": False, "memory": {"commit": "0000000", "client_growth_mib": 0.1,
                                         "worker_growth_mib": [0.2]}}
    (tmp_path / "results.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit):
        run_all.main(["--only", "scheduler_memory", "--out", str(tmp_path)])
    assert "memory was measured at 0000000" in capsys.readouterr().err
    # nothing was run or written
    assert json.loads((tmp_path / "results.json").read_text()) == stored


def test_goals_come_from_each_benchmark_and_say_where():
    results = {"memory": {"client_growth_mib": 0.4, "worker_growth_mib": [7.0, 0.1]},
               "weak_scaling": {"rows": "an older format"}}
    goals = {goal: (met, measured) for goal, met, measured in run_all.goals(results)}
    assert goals["no memory growth across epochs (< 5 MiB per process)"] == (
        False, "largest growth +7.0 MiB (memory)")
    assert goals[f"the goals of {run_all.TITLES['weak_scaling']}"] == (
        None, "not measured by this version of the benchmark")
    assert goals[f"the goals of {run_all.TITLES['update_cost']}"] == (None, "not measured")

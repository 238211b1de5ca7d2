"""benchmarks/run_all.py: sections stamped with their commit, goals collected
from the benchmarks that declare them, the committed results rendered, and
every script of benchmarks/ on the protocol of common.py (no benchmark is
run here)."""
import ast
import json
import os
import sys
import types

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")
sys.path.insert(0, BENCHMARKS)

import common  # noqa: E402
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
    assert goals[f"the goals of {run_all.BENCHMARKS['weak_scaling'].TITLE}"] == (
        None, "not measured by this version of the benchmark")
    assert goals[f"the goals of {run_all.BENCHMARKS['update_cost'].TITLE}"] == (
        None, "not measured")


def test_the_committed_results_render_as_committed():
    """results.md is what run_all renders from results.json: goals, titles
    and tables of the committed run, read by today's benchmarks."""
    results_dir = os.path.join(BENCHMARKS, "results")
    with open(os.path.join(results_dir, "results.json")) as f:
        results = json.load(f)
    goals = [{"goal": g, "met": None if met is None else bool(met), "measured": m}
             for g, met, m in run_all.goals(results)]
    assert goals == results["goals"]
    with open(os.path.join(results_dir, "results.md")) as f:
        assert "\n".join(run_all.render(results)) + "\n" == f.read()


def _scripts():
    return sorted(name for name in os.listdir(BENCHMARKS)
                  if name.endswith(".py") and name not in ("common.py", "run_all.py"))


@pytest.mark.parametrize("script", _scripts())
def test_every_script_has_the_protocol_and_imports_only_common(script):
    with open(os.path.join(BENCHMARKS, script)) as f:
        source = f.read()
    tree = ast.parse(source)
    names = {target.id for node in tree.body if isinstance(node, ast.Assign)
             for target in node.targets if isinstance(target, ast.Name)}
    names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"TITLE", "run", "markdown"} <= names
    run = next(node for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name == "run")
    assert run.args.args[0].arg == "quick" and run.args.defaults[0].value is False
    assert "python benchmarks/" + script in ast.get_docstring(tree)
    ours = {name[:-3] for name in os.listdir(BENCHMARKS) if name.endswith(".py")}
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported & ours <= {"common"}
    assert source.endswith('\nif __name__ == "__main__":\n    main(sys.modules[__name__])\n')


def test_a_script_runs_with_its_options_and_prints_its_goals(tmp_path, capsys):
    module = types.ModuleType("fake")
    module.TITLE = "9. Fake"
    module.OPTIONS = {"--n": dict(type=int, default=1)}
    module.run = lambda quick=False, n=1: {"quick": quick, "n": n}
    module.markdown = lambda result: f"n = {result['n']}"
    module.goals = lambda result: [("n is 2", result["n"] == 2, f"n {result['n']} (fake)")]
    common.main(module, ["--quick", "--n", "2", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert out.startswith("# 9. Fake\n")
    assert "n = 2\n" in out and "| n is 2 | n 2 (fake) | yes |" in out
    assert json.loads((tmp_path / "r.json").read_text()) == {"quick": True, "n": 2}

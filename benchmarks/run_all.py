"""Run every benchmark and write the results table.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--allow-mixed]
                                 [--out benchmarks/results]

Writes ``results.json`` (everything measured) and ``results.md`` (the goals
against what was measured, then each benchmark's tables), stamped with the
machine, the versions, the git commit (``+dirty`` when tracked files differ
from it) and the date.

Each section's numbers are measured side by side in one run of that
section, on one machine; each section says the commit and the date it was
measured at. ``--only`` reruns the named sections and keeps the others from
the existing results.json; it refuses when a kept section was measured at
another commit than the current one, unless ``--allow-mixed`` is given.

The goals compare measured numbers with targets: most are ratios of two
times measured side by side in one section (e.g. update / plain loop); the
update overhead (ms) and the memory growth (MiB) are absolute amounts
measured on this machine. A goal whose numbers are missing (a section not
measured, or measured by an older version of its benchmark) says "not
measured".
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dampers_mnist1d  # noqa: E402
import memory  # noqa: E402
import scheduler_memory  # noqa: E402
import strongly_convex  # noqa: E402
import time_to_accuracy  # noqa: E402
import update_cost  # noqa: E402
import weak_scaling  # noqa: E402
from common import machine, table  # noqa: E402

BENCHMARKS = {
    "update_cost": update_cost,
    "weak_scaling": weak_scaling,
    "time_to_accuracy": time_to_accuracy,
    "memory": memory,
    "scheduler_memory": scheduler_memory,
    "strongly_convex": strongly_convex,
    "dampers_mnist1d": dampers_mnist1d,
}
TITLES = {
    "update_cost": "1. Update cost",
    "weak_scaling": "2. Weak scaling of the overhead",
    "time_to_accuracy": "3. Time to accuracy",
    "memory": "4. Memory",
    "scheduler_memory": "4b. Scheduler memory with 1 GB of numpy data",
    "strongly_convex": "5. AdaDamp on a strongly convex problem",
    "dampers_mnist1d": "6. Growing batches on MNIST-1D",
}


NOT_MEASURED = "not measured"


def goals(results):
    """Each goal against what was measured: ``(goal, met, measured)``, with
    ``met`` None where the numbers are missing."""
    return (_convex_goals(results) + _mnist1d_goals(results) + _speed_goals(results)
            + _memory_goals(results))


def _guarded(goal_names, compute):
    """``compute()``'s goals, or each of ``goal_names`` not measured when
    the numbers it reads are missing (a section not run, an older format)."""
    try:
        return compute()
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return [(name, None, NOT_MEASURED) for name in goal_names]


def _convex_goals(results):
    names = ["AdaDamp: model updates to eps <= 2x gradient descent's (median of seeds)",
             "AdaDamp: examples to eps <= 2x constant-batch SGD's (median of seeds)"]

    def compute():
        convex = results["strongly_convex"]
        return [(names[0], convex["updates_vs_gd"] <= 2, f"{convex['updates_vs_gd']:.2f}x"),
                (names[1], convex["examples_vs_sgd"] <= 2,
                 f"{convex['examples_vs_sgd']:.2f}x")]
    return _guarded(names, compute)


def _mnist1d_goals(results):
    def compute():
        damped = {r["run"].split(",")[0]: r for r in results["dampers_mnist1d"]["rows"]}
        return [
            (f"{name} on MNIST-1D: SGD's accuracy - 0.01 with >= 3x fewer updates, "
             "<= 1.2x the epochs",
             r.get("fewer_updates", 0) >= 3 and r["epochs_ratio"] <= 1.2,
             f"{r.get('fewer_updates', 0):.2f}x fewer updates, "
             f"{r.get('epochs_ratio', math.inf):.2f}x the epochs")
            for name, r in damped.items() if name != "SGD"]
    return _guarded(["dampers on MNIST-1D: SGD's accuracy - 0.01 with >= 3x fewer "
                     "updates, <= 1.2x the epochs"], compute)


def _speed_goals(results):
    out = []

    def update_row(batch):
        rows = {(r["model"], r["batch"]): r for r in results["update_cost"]["rows"]}
        return rows[("mlp-270k", batch)]

    def overhead():
        r = update_row(512)
        return (r["overhead_ms"] <= 2,
                f"{r['overhead_ms']:.1f} ms = update {r['dask_adadamp_ms']:.1f} ms "
                f"- floor {r['floor_ms']:.1f} ms (update cost, 270k, batch 512)")

    def vs_plain(batch, target):
        r = update_row(batch)
        return (r["vs_plain"] <= target,
                f"{r['vs_plain']:.2f}x = update {r['dask_adadamp_ms']:.1f} ms / plain "
                f"{r['plain_ms']:.1f} ms (update cost, 270k, batch {batch})")

    def chunk_compute():
        r = update_row(512)
        return (r["compute_vs_floor"] <= 1.15,
                f"{r['compute_vs_floor']:.2f}x = compute_ms {r['compute_ms']:.1f} / floor "
                f"{r['floor_ms']:.1f} ms (update cost, 270k, batch 512)")

    def scaling():
        rows = {r["workers"]: r for r in results["weak_scaling"]["rows"]}
        many, one = rows[16], rows[1]
        ratio = many["update_ms"] / one["update_ms"]
        return (ratio <= 1.3, f"{ratio:.2f}x = {many['update_ms']:.1f} ms / "
                f"{one['update_ms']:.1f} ms (weak scaling)")

    for goal, compute in [
            ("overhead <= 2 ms per update at 2 workers (270k MLP, batch 512; "
             "update - 1-thread floor of one worker's chunk)", overhead),
            ("update <= 1.5x the 2-thread plain loop at batch 512 (270k MLP)",
             lambda: vs_plain(512, 1.5)),
            ("update <= 1.0x the 2-thread plain loop at batch 4096 (270k MLP)",
             lambda: vs_plain(4096, 1.0)),
            ("chunk compute on a worker <= 1.15x the same rows in one 1-thread process "
             "(270k, batch 512)", chunk_compute),
            ("weak scaling: 16 workers <= 1.3x 1 worker", scaling),
            ("time to 0.65 MNIST-1D accuracy, best schedule <= 1.0x skorch in one process",
             lambda: _time_to_accuracy(results))]:
        out += _guarded([goal], lambda: [(goal, *compute())])
    return out


def _time_to_accuracy(results):
    """Best non-skorch time / skorch's, from rows with ``run`` and
    ``seconds`` (rows that did not reach the target, or whose seconds are
    None, left out)."""
    section = results.get("time_to_accuracy")
    rows = section.get("rows") if isinstance(section, dict) else None
    if not rows or not all(isinstance(r, dict) and {"run", "seconds"} <= r.keys()
                           for r in rows):
        return None, NOT_MEASURED
    reached = [r for r in rows if r.get("reached", True)
               and isinstance(r["seconds"], (int, float))]  # None: never reached
    skorch = [r for r in reached if str(r["run"]).startswith("skorch")]
    others = [r for r in reached if not str(r["run"]).startswith("skorch")]
    if not skorch:
        return None, f"{NOT_MEASURED} (skorch did not reach the target)"
    if not others:
        return False, "no schedule reached the target (time to accuracy)"
    base = skorch[0]
    best = min(others, key=lambda r: r["seconds"])
    ratio = best["seconds"] / base["seconds"]
    target = section.get("target")
    where = (f" (time to accuracy, target {target:.2f})"
             if isinstance(target, (int, float)) else " (time to accuracy)")
    return (ratio <= 1.0, f"{ratio:.2f}x = {best['run']} {best['seconds']:.1f} s / "
            f"{base['run']} {base['seconds']:.1f} s{where}")


def _memory_goals(results):
    name = "no memory growth across epochs (< 5 MiB per process)"

    def compute():
        mem = results["memory"]
        worst = max([mem["client_growth_mib"]] + mem["worker_growth_mib"])
        return [(name, worst < 5, f"largest growth {worst:+.1f} MiB")]
    goals = _guarded([name], compute)
    sched = "the scheduler holds no copy of numpy training data (growth <= 0.05x the data)"

    def compute_sched():
        r = results["scheduler_memory"]
        return [(sched, r["scheduler_growth_per_data"] <= 0.05,
                 f"{r['scheduler_growth_mib']:+.0f} MiB for {r['data_mib']:.0f} MiB of data "
                 f"({r['scheduler_growth_per_data']:.2f}x; scheduler memory)")]
    return goals + _guarded([sched], compute_sched)


def _met(met):
    return "-" if met is None else "yes" if met else "no"


def render(results):
    """The Markdown report, as lines."""
    m = results["machine"]
    commits = {results[name].get("commit", "unknown") for name in BENCHMARKS
               if name in results}
    mixed = commits - {m.get("commit")}
    lines = ["# dask-adadamp benchmark results", "",
             f"commit {m.get('commit', 'unknown')}, {m['date']}; {m['machine']}; "
             f"Python {m['python']}, torch {m['torch']} "
             f"({m['torch_threads']} threads in the plain loop), dask {m['dask']}, "
             f"distributed {m['distributed']}, skorch {m['skorch']}"
             + ("; QUICK run" if results["quick"] else "")
             + ("; MIXED: some sections were measured at other commits "
                f"({', '.join(sorted(mixed))}), each says its own" if mixed else ""), "",
             "## Goals", "",
             table(["goal", "measured (where from)", "met"],
                   [[g["goal"], g["measured"], _met(g["met"])]
                    for g in results["goals"]])]
    for name, module in BENCHMARKS.items():
        lines += ["", f"## {TITLES[name]}", ""]
        if name not in results:
            lines += ["Not measured."]
            continue
        section = results[name]
        if "measured" in section:
            where = section.get("machine")
            stamp = section["measured"]
            if "commit" not in section:  # stamped before sections said their commit
                stamp = f"commit unknown, {stamp}"
            lines += [f"Measured {stamp}"
                      + (f" on {where}" if where and where != m["machine"] else "")
                      + ("; quick run" if section.get("quick") else "") + ".", ""]
        try:
            lines += [module.markdown(section)]
        except (KeyError, IndexError, TypeError, ValueError):
            lines += ["Measured by an older version of this benchmark, whose table this "
                      "one cannot draw; its numbers are in results.json."]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer updates, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS),
                        help="run these; keep the other results of results.json")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="with --only, keep sections measured at another commit")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    # Stamped once, before anything runs: the code the run measures.
    here = machine()
    results = {"quick": args.quick}
    if args.only:
        with open(os.path.join(args.out, "results.json")) as f:
            stored = json.load(f)
        kept = [name for name in BENCHMARKS if name in stored and name not in args.only]
        other = {name: stored[name].get("commit", "unknown") for name in kept
                 if stored[name].get("commit", "unknown") != here["commit"]}
        if other and not args.allow_mixed:
            parser.error(
                f"the current commit is {here['commit']}, but results.json's "
                + ", ".join(f"{name} was measured at {c}" for name, c in other.items())
                + "; rerun those too, or pass --allow-mixed to keep them "
                "(each section then says its own commit)")
        results = {**stored, "quick": args.quick or any(
            stored[name].get("quick", stored.get("quick", False)) for name in kept)}
    results["machine"] = here
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        print(f"== {TITLES[name]}", flush=True)
        results[name] = BENCHMARKS[name].run(quick=args.quick)
        results[name]["benchmark_seconds"] = time.perf_counter() - start
        results[name].update(commit=here["commit"], quick=args.quick,
                             machine=here["machine"],
                             measured=f"commit {here['commit']}, {machine()['date']}")
        # Written after every section: a later one that fails loses nothing.
        lines = write(results, args.out)
    print("\n".join(lines))


def write(results, out):
    """Write results.md and results.json; return the Markdown lines."""
    results["goals"] = [{"goal": g, "met": None if met is None else bool(met),
                         "measured": m} for g, met, m in goals(results)]
    lines = render(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return lines


if __name__ == "__main__":
    main()

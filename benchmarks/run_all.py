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

Every section is a module of this folder with the protocol of common.py
(``TITLE``, ``run``, ``markdown``, ``goals``). The goals compare measured
numbers with targets; each benchmark declares its own (its ``goals``), and
each says the section its numbers come from.
Most are ratios of two quantities measured side by side in one section
(e.g. update / plain loop); the update overhead (ms) and the memory growth
(MiB) are absolute amounts measured on this machine. A section not
measured (or measured by an older version of its benchmark) says "not
measured".

Section 7 simulates the runs of section 6 when they were measured at the
same commit, and otherwise runs them itself (its ``READS``).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dampers_mnist1d  # noqa: E402
import memory  # noqa: E402
import monitor_cost  # noqa: E402
import scheduler_memory  # noqa: E402
import simulate_calibrated  # noqa: E402
import simulate_paper  # noqa: E402
import simulate_table  # noqa: E402
import strongly_convex  # noqa: E402
import time_to_accuracy  # noqa: E402
import update_cost  # noqa: E402
import weak_scaling  # noqa: E402
from common import goals_table, machine  # noqa: E402

# The sections, in their order in results.md.
BENCHMARKS = {module.__name__: module for module in (
    update_cost, weak_scaling, time_to_accuracy, memory, scheduler_memory,
    strongly_convex, dampers_mnist1d, simulate_paper, simulate_table, simulate_calibrated,
    monitor_cost)}


def goals(results):
    """Every benchmark's goals against what it measured: ``(goal, met,
    measured)``, with ``met`` None where a section was not measured (or by
    an older version of its benchmark, whose numbers its goals cannot
    read). Each goal is declared in its benchmark's ``goals``."""
    out = []
    for name, module in BENCHMARKS.items():
        if name not in results:
            out.append((f"the goals of {module.TITLE}", None, "not measured"))
            continue
        try:
            out += module.goals(results[name])
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            out.append((f"the goals of {module.TITLE}", None,
                        "not measured by this version of the benchmark"))
    return out


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
             goals_table([(g["goal"], g["met"], g["measured"]) for g in results["goals"]])]
    for name, module in BENCHMARKS.items():
        lines += ["", f"## {module.TITLE}", ""]
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
                      + (f"; load average {section['load']:.1f} when it began"
                         if "load" in section else "")
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
        module = BENCHMARKS[name]
        print(f"== {module.TITLE}", flush=True)
        # Other work on the machine slows what a section times: say how busy it was.
        load = os.getloadavg()[0]
        # Another section's result of this commit, where this one reads it.
        kwargs = {keyword: results[source]
                  for keyword, source in getattr(module, "READS", {}).items()
                  if results.get(source, {}).get("commit") == here["commit"]}
        results[name] = module.run(quick=args.quick, **kwargs)
        results[name]["benchmark_seconds"] = time.perf_counter() - start
        results[name].update(commit=here["commit"], quick=args.quick,
                             machine=here["machine"],
                             measured=f"commit {here['commit']}, {machine()['date']}",
                             load=load)
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

"""Run every benchmark and write the results table.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--out benchmarks/results]

``--only`` runs the named benchmarks and keeps the other sections of the
existing results.json (each section says when it was measured).

Writes ``results.md`` (Markdown, with each goal against its measured ratio)
and ``results.json`` (everything measured), stamped with the machine, the
versions and the date. Every number is a ratio or a time measured side by
side in this one run; nothing is compared with an absolute threshold.
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
    "strongly_convex": strongly_convex,
    "dampers_mnist1d": dampers_mnist1d,
}
TITLES = {
    "update_cost": "1. Update cost",
    "weak_scaling": "2. Weak scaling of the overhead",
    "time_to_accuracy": "3. Time to accuracy",
    "memory": "4. Memory",
    "strongly_convex": "5. AdaDamp on a strongly convex problem",
    "dampers_mnist1d": "6. Growing batches on MNIST-1D",
}


def goals(results):
    """Each goal of the speed issue against what was measured."""
    rows = {(r["model"], r["batch"]): r for r in results["update_cost"]["rows"]}
    small512, small4096 = rows[("mlp-270k", 512)], rows[("mlp-270k", 4096)]
    scaling = results["weak_scaling"]["rows"]
    mem = results["memory"]
    worst_growth = max([mem["client_growth_mib"]] + mem["worker_growth_mib"])
    convex, mnist = results["strongly_convex"], results["dampers_mnist1d"]
    damped = {r["run"].split(",")[0]: r for r in mnist["rows"]}
    return [
        ("AdaDamp: model updates to eps <= 2x gradient descent's (median of seeds)",
         convex["updates_vs_gd"] <= 2, f"{convex['updates_vs_gd']:.2f}x"),
        ("AdaDamp: examples to eps <= 2x constant-batch SGD's (median of seeds)",
         convex["examples_vs_sgd"] <= 2, f"{convex['examples_vs_sgd']:.2f}x"),
    ] + [
        (f"{name} on MNIST-1D: SGD's accuracy - 0.01 with >= 3x fewer updates, "
         "<= 1.2x the epochs", r.get("fewer_updates", 0) >= 3 and r["epochs_ratio"] <= 1.2,
         f"{r.get('fewer_updates', 0):.2f}x fewer updates, "
         f"{r.get('epochs_ratio', math.inf):.2f}x the epochs")
        for name, r in damped.items() if name != "SGD"
    ] + [
        ("update at batch 512 <= 1.0x plain loop", small512["vs_plain"] <= 1.0,
         f"{small512['vs_plain']:.2f}x"),
        ("update at batch 512 <= 1.25x DDP", small512["vs_ddp"] <= 1.25,
         f"{small512['vs_ddp']:.2f}x"),
        ("update at batch 4096 <= 0.65x plain loop", small4096["vs_plain"] <= 0.65,
         f"{small4096['vs_plain']:.2f}x"),
        ("overhead per update < 5 ms (270k params, batch 512)",
         small512["overhead_ms"] < 5, f"{small512['overhead_ms']:.1f} ms"),
        ("overhead per update < 5 ms (270k params, batch 4096)",
         small4096["overhead_ms"] < 5, f"{small4096['overhead_ms']:.1f} ms"),
        ("weak scaling: 16 workers <= 1.3x 1 worker",
         scaling[-1]["vs_1_worker"] <= 1.3, f"{scaling[-1]['vs_1_worker']:.2f}x"),
        ("no memory growth across epochs (< 5 MiB per process)", worst_growth < 5,
         f"largest growth {worst_growth:+.1f} MiB"),
    ]


def render(results):
    """The Markdown report, as lines."""
    m = results["machine"]
    lines = ["# dask-adadamp benchmark results", "",
             f"{m['date']}; {m['machine']}; Python {m['python']}, torch {m['torch']} "
             f"({m['torch_threads']} threads in the plain loop), dask {m['dask']}, "
             f"distributed {m['distributed']}, skorch {m['skorch']}"
             + ("; QUICK run" if results["quick"] else ""), "",
             "## Goals", "",
             table(["goal", "measured", "met"],
                   [[g["goal"], g["measured"], "yes" if g["met"] else "no"]
                    for g in results["goals"]])]
    for name, module in BENCHMARKS.items():
        lines += ["", f"## {TITLES[name]}", ""]
        if "measured" in results[name]:
            lines += [f"Measured {results[name]['measured']}.", ""]
        lines += [module.markdown(results[name])]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer updates, for a smoke run")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS),
                        help="run these; keep the other results of results.json")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {"machine": machine(), "quick": args.quick}
    if args.only:
        with open(os.path.join(args.out, "results.json")) as f:
            results = {**json.load(f), "quick": args.quick}
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        print(f"== {TITLES[name]}", flush=True)
        results[name] = BENCHMARKS[name].run(quick=args.quick)
        results[name]["benchmark_seconds"] = time.perf_counter() - start
        results[name]["measured"] = machine()["date"]
    results["goals"] = [{"goal": g, "met": bool(met), "measured": m}
                        for g, met, m in goals(results)]

    lines = render(results)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Run every benchmark and write the results table.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results]

Writes ``results.md`` (Markdown, with each goal against its measured ratio)
and ``results.json`` (everything measured), stamped with the machine, the
versions and the date. Every number is a ratio or a time measured side by
side in this one run; nothing is compared with an absolute threshold.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import memory  # noqa: E402
import time_to_accuracy  # noqa: E402
import update_cost  # noqa: E402
import weak_scaling  # noqa: E402
from common import machine, table  # noqa: E402

BENCHMARKS = {
    "update_cost": update_cost,
    "weak_scaling": weak_scaling,
    "time_to_accuracy": time_to_accuracy,
    "memory": memory,
}
TITLES = {
    "update_cost": "1. Update cost",
    "weak_scaling": "2. Weak scaling of the overhead",
    "time_to_accuracy": "3. Time to accuracy",
    "memory": "4. Memory",
}


def goals(results):
    """Each goal of the speed issue against what was measured."""
    rows = {(r["model"], r["batch"]): r for r in results["update_cost"]["rows"]}
    small512, small4096 = rows[("mlp-270k", 512)], rows[("mlp-270k", 4096)]
    scaling = results["weak_scaling"]["rows"]
    mem = results["memory"]
    worst_growth = max([mem["client_growth_mib"]] + mem["worker_growth_mib"])
    return [
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
        lines += ["", f"## {TITLES[name]}", "", module.markdown(results[name])]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer updates, for a smoke run")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {"machine": machine(), "quick": args.quick}
    for name, module in BENCHMARKS.items():
        start = time.perf_counter()
        print(f"== {TITLES[name]}", flush=True)
        results[name] = module.run(quick=args.quick)
        results[name]["benchmark_seconds"] = time.perf_counter() - start
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

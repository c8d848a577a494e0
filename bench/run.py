"""Benchmark convkern against NumPy im2col and PyTorch: ``python bench/run.py``.

Times every workload pass of :mod:`workloads` at each thread count, measures the
memory of one call on shape C and the import time, prints a table and the issue-3
target checklist, and writes ``<out>/latest.{json,md,png}`` (``partial.*`` for
``--quick`` or ``--only`` runs, so a smoke run never replaces the full results).
``--suite zoo`` runs the model-zoo benchmark instead (:mod:`zoo_bench`) and
``--suite e2e`` the end-to-end training-step benchmark (:mod:`e2e`).

NumPy's BLAS threads are limited with threadpoolctl; without it, each thread
count is measured in a child process started with ``OPENBLAS_NUM_THREADS=n``.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import chart
import measure
import memory
import report
import startup
import targets
from e2e import run_e2e
from machine import machine_info
from peers import make_peers, numpy_blas_controller
from workloads import BY_NAME, QUICK, SUITE
from zoo_bench import QUICK_STEP, run_zoo

HERE = Path(__file__).resolve().parent


def parse_args(argv):
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("default", "zoo", "e2e"), default="default",
                   help="default: workloads A-E, 1D, 3D, pool; zoo: layers of published "
                        "networks; e2e: training steps of whole networks")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int,
                   help="timed batches per peer and pass; the median is reported "
                        "(default 7, or 2 with --quick; zoo: 5, or 3 for calls of 50 ms "
                        "or more; e2e: 5)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: 2 repeats on {','.join(QUICK)} (zoo: on one layer in "
                        f"{QUICK_STEP}; e2e: 2 repeats)")
    p.add_argument("--only", help="comma-separated workloads, e.g. A,C,1D,pool (zoo: "
                                   "networks, e.g. lenet5,mobilenetv2; e2e: networks)")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--pause", type=float,
                   help="seconds to pause when switching library (default 0.25; zoo: "
                        "0.01)")
    p.add_argument("--out", type=Path, default=HERE / "results",
                   help="output directory (default bench/results)")
    p.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.suite == "default":
        if args.repeats is None:
            args.repeats = 2 if args.quick else 7
        if args.pause is None:
            args.pause = 0.25
    return args


def select_workloads(args):
    """Return the workloads to run, in suite order."""
    if not args.only:
        return [BY_NAME[n] for n in QUICK] if args.quick else list(SUITE)
    lower = {name.lower(): w for name, w in BY_NAME.items()}
    wanted = [n.strip().lower() for n in args.only.split(",")]
    unknown = [n for n in wanted if n not in lower]
    if unknown:
        sys.exit(f"unknown workload(s) {unknown}; choose from {', '.join(BY_NAME)}")
    return [w for w in SUITE if w.name.lower() in wanted]


def run_blocks(args, peers, workloads):
    """Measure each thread count, in this process or (no threadpoolctl) in children."""
    if numpy_blas_controller() is not None:
        return [measure.measure_block(peers, workloads, n, args.repeats, args.pause)
                for n in args.threads]
    blocks = []
    for n in args.threads:
        tmp = args.out / f"block-{n}.tmp"
        cmd = [sys.executable, __file__, "--worker-threads", str(n),
               "--worker-out", str(tmp), "--repeats", str(args.repeats),
               "--pause", str(args.pause), "--only", ",".join(w.name for w in workloads)]
        cmd += [] if any(p.name == "torch" for p in peers) else ["--no-torch"]
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
        subprocess.run(cmd, env=env, check=True)
        blocks.append(json.loads(tmp.read_text()))
        tmp.unlink()
    return blocks


def main(argv=None):
    """Run the benchmark; return the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.suite == "zoo":
        return run_zoo(args, argv)
    if args.suite == "e2e":
        return run_e2e(args, argv)
    workloads = select_workloads(args)
    peers = make_peers(not args.no_torch)
    try:
        if args.worker_threads:
            block = measure.measure_block(peers, workloads, args.worker_threads,
                                          args.repeats, args.pause)
            args.worker_out.write_text(json.dumps(block))
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        info = machine_info(peers, numpy_blas_controller())
        print(f"convkern bench: {', '.join(p.name for p in peers)}; "
              f"threads {args.threads}; {args.repeats} repeats")
        blocks = run_blocks(args, peers, workloads)
    except measure.MismatchError as err:
        print(f"VERIFICATION FAILED: {err}", file=sys.stderr)
        return 1
    print("measuring memory (fresh processes) and import time ...", flush=True)
    mem = memory.measure_memory([p.name for p in peers], max(args.threads))
    imports = startup.import_times(peers[0].lib, 3 if args.quick else 7)
    run = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py"] + argv),
        "options": {"threads": args.threads, "repeats": args.repeats,
                    "pause": args.pause, "workloads": [w.name for w in workloads]},
        "machine": info,
        "blocks": blocks,
        "memory": mem,
        "imports": imports,
        "targets": targets.checklist(blocks, mem, imports),
    }
    print()
    print(report.text_report(run))
    stem = "partial" if args.quick or args.only else "latest"
    png = args.out / f"{stem}.png"
    chart_name = png.name if chart.write_chart(run, png) else None
    paths = report.write_reports(run, args.out, stem, chart_name)
    print("\nwrote " + ", ".join(str(p) for p in (*paths, *([png] if chart_name else []))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

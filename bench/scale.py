"""Scaling beyond one process: dask inference and MPI data-parallel training.

    python bench/scale.py [--quick]

1. Images per second of ``convkern.dask.predict`` over a dask array of 3x32x32 images
   (chunks of 128 along the batch, persisted on the workers first, so the timing is
   the inference, not the data's creation) on a ``distributed.LocalCluster`` of 1 and 2
   worker processes with one thread each, and 1 worker whose kernels use 2 threads.
2. Training examples per second of data-parallel SGD (``convkern.distributed``; a
   global batch of 64 split over the ranks) under ``mpiexec`` with 1 rank x 1 thread,
   1 rank x 2 threads and 2 ranks x 1 thread: the last two use the same total threads.

Both use the same small CIFAR-sized CNN. Writes ``bench/results/scale.md`` and ``.json``.
Needs the ``dask`` and ``mpi`` extras. Each row records how many cores the whole machine
kept busy meanwhile and the load average (this run's processes included): on a shared
machine, figures from a busy run understate the scaling. A benchmark, not a test.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from machine import _cpu_model, cpu_snapshot  # noqa: E402

import convkern as ck  # noqa: E402

IMAGE = (3, 32, 32)
CHUNK = 128
GLOBAL_BATCH = 64


def build_model():
    """conv(32)-relu-pool, conv(64)-relu-pool, dense(10) on 3x32x32 images, float32."""
    return ck.Sequential(
        ck.Conv(3, 32, (3, 3), padding=1, activation="relu", rng=0),
        ck.MaxPool(2),
        ck.Conv(32, 64, (3, 3), padding=1, activation="relu", rng=1),
        ck.MaxPool(2),
        ck.Flatten(),
        ck.Dense(64 * 8 * 8, 10, rng=2),
    )


def busy_cores(start, end):
    """Cores the whole machine kept busy between two ``cpu_snapshot()`` calls."""
    if start is None or end is None:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 2)


def load():
    """The 1-minute load average: runnable processes, this run's included."""
    return round(os.getloadavg()[0], 1)


def time_dask(workers, kernel_threads, images, repeats):
    """Median seconds of ``predict(...).compute()`` on a LocalCluster; busy cores."""
    import dask.array as da
    import distributed

    from convkern.dask import predict

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.run(ck.set_num_threads, kernel_threads)
        x = da.random.default_rng(0).random((images,) + IMAGE, dtype=np.float32,
                                            chunks=(CHUNK,) + IMAGE)
        x = x.persist()
        distributed.wait(x)
        y = predict(build_model(), x)
        y.compute()  # warm-up: the model reaches every worker
        times = []
        start = cpu_snapshot()
        for _ in range(repeats):
            t0 = time.perf_counter()
            y.compute()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), busy_cores(start, cpu_snapshot()), load()


def time_in_memory(images, repeats):
    """Median seconds of the same inference in this process, one kernel thread."""
    ck.set_num_threads(1)
    model = build_model().eval()
    x = np.random.default_rng(0).random((images,) + IMAGE, dtype=np.float32)
    model(x[:CHUNK])
    times = []
    start = cpu_snapshot()
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, images, CHUNK):
            model(x[i:i + CHUNK])
        times.append(time.perf_counter() - t0)
    ck.set_num_threads(None)
    return statistics.median(times), busy_cores(start, cpu_snapshot()), load()


def mpi_worker(steps, out):
    """Run under mpiexec: time ``steps`` data-parallel SGD steps; rank 0 writes JSON."""
    from mpi4py import MPI

    from convkern.distributed import allreduce_gradients, broadcast_parameters, shard

    comm = MPI.COMM_WORLD
    model = build_model()
    broadcast_parameters(model, comm)
    criterion = ck.SoftmaxCrossEntropyLoss()
    optimizer = ck.SGD(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = shard(rng.random((GLOBAL_BATCH,) + IMAGE, dtype=np.float32), comm)
    labels = shard(rng.integers(0, 10, GLOBAL_BATCH), comm)

    def step():
        criterion(model(x), labels)
        optimizer.zero_grad()
        model.backward(criterion.backward())
        allreduce_gradients(model, comm)
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    comm.Barrier()
    start, t0 = cpu_snapshot(), time.perf_counter()
    for _ in range(steps):
        step()
    comm.Barrier()
    seconds = time.perf_counter() - t0
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump({"seconds": seconds, "busy_cores": busy_cores(start, cpu_snapshot()),
                       "load": load()}, f)


def time_mpi(ranks, threads, steps, work):
    """Run ``mpi_worker`` under ``mpiexec -n ranks`` with ``threads`` kernel threads each."""
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    out = os.path.join(work, f"mpi-{ranks}x{threads}.json")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run([mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                    "--mpi-worker", "--steps", str(steps), "--out", out],
                   env=env, check=True, timeout=900)
    with open(out) as f:
        return json.load(f)


def markdown(run):
    lines = [
        "# Scaling beyond one process",
        "",
        f"{run['date']}, {run['cpu']}, {run['cores']} cores; convkern {run['convkern']}, "
        f"dask {run['dask']}, mpi4py {run['mpi4py']} ({run['mpi']}). "
        "Written by `python bench/scale.py`.",
        "",
        "Model: conv(3->32) relu pool, conv(32->64) relu pool, dense(4096->10), float32, "
        "3x32x32 images. 'busy cores' is the whole machine's CPU use during the timing and "
        "'load' the 1-minute load average after it, this run's own processes included: "
        "busy cores above the row's threads, or a load above the number of cores, mean "
        "other work was competing for the cores.",
        "",
        f"## Inference: `convkern.dask.predict`, {run['images']} images in chunks of {CHUNK}",
        "",
        "| setup | total threads | images/s | speed-up | busy cores | load |",
        "|---|---|---|---|---|---|",
    ]
    for row in run["dask_rows"]:
        lines.append(f"| {row['setup']} | {row['threads']} | {row['images_per_s']:,.0f} | "
                     f"{row['images_per_s'] / run['dask_rows'][0]['images_per_s']:.2f}x | "
                     f"{row['busy_cores']} | {row['load']} |")
    lines += [
        "",
        f"## Training: data-parallel SGD, global batch {GLOBAL_BATCH}, {run['steps']} steps",
        "",
        "| ranks x threads | total threads | examples/s | speed-up | busy cores | load |",
        "|---|---|---|---|---|---|",
    ]
    for row in run["mpi_rows"]:
        lines.append(f"| {row['ranks']} x {row['threads']} | {row['ranks'] * row['threads']} | "
                     f"{row['examples_per_s']:,.0f} | "
                     f"{row['examples_per_s'] / run['mpi_rows'][0]['examples_per_s']:.2f}x | "
                     f"{row['busy_cores']} | {row['load']} |")
    lines += ["", run["note"], ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. the load)")
    parser.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mpi_worker:
        mpi_worker(args.steps, args.out)
        return
    import dask
    import mpi4py
    from mpi4py import MPI

    images, repeats, steps = (512, 1, 5) if args.quick else (4096, 3, 30)
    run = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "convkern": ck.__version__,
        "dask": dask.__version__, "mpi4py": mpi4py.__version__,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "images": images, "steps": steps, "dask_rows": [], "mpi_rows": [],
    }
    seconds, busy, avg = time_in_memory(images, repeats)
    run["dask_rows"].append({"setup": "in memory, no dask (reference)", "threads": 1,
                             "images_per_s": images / seconds, "busy_cores": busy, "load": avg})
    for workers, threads in ((1, 1), (2, 1), (1, 2)):
        time.sleep(1)
        seconds, busy, avg = time_dask(workers, threads, images, repeats)
        run["dask_rows"].append({
            "setup": f"{workers} worker(s) x 1 thread, kernels on {threads} thread(s)",
            "threads": workers * threads, "images_per_s": images / seconds, "busy_cores": busy,
            "load": avg})
        print(run["dask_rows"][-1], flush=True)
    work = os.path.join(HERE, "results")
    for ranks, threads in ((1, 1), (1, 2), (2, 1)):
        time.sleep(1)
        result = time_mpi(ranks, threads, steps, work)
        os.remove(os.path.join(work, f"mpi-{ranks}x{threads}.json"))
        run["mpi_rows"].append({"ranks": ranks, "threads": threads,
                                "examples_per_s": steps * GLOBAL_BATCH / result["seconds"],
                                "busy_cores": result["busy_cores"], "load": result["load"]})
        print(run["mpi_rows"][-1], flush=True)
    run["note"] = args.note
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "scale.json"), "w") as f:
        json.dump(run, f, indent=1)
    with open(os.path.join(work, "scale.md"), "w") as f:
        f.write(markdown(run))
    print(markdown(run))


if __name__ == "__main__":
    main()

"""End-to-end benchmark: ``python bench/run.py --suite e2e`` (or ``python bench/e2e.py``).

For each network of :mod:`e2e_nets`, built with convkern's layer API and as the same
network in PyTorch eager with the same weights (checked equal first: logits, loss,
gradients, parameters after one SGD step, batch-1 eval output), times

- one training step at the network's training batch: forward, softmax cross-entropy,
  backward, SGD with momentum 0.9 (``zero_grad`` included);
- batch-1 inference: convkern in eval mode, PyTorch in eval mode under
  ``torch.inference_mode()``.

See :func:`e2e_nets.check_twins` for what is compared before timing (once, before
the first thread count). The two
libraries are interleaved (calibrated batches of calls, a pause and one untimed
call before each switch) and the median is reported, at each thread count (``convkern.set_num_threads``,
``torch.set_num_threads`` and, with threadpoolctl, NumPy's BLAS, which convkern's Dense
layers use). Writes ``<out>/e2e.{json,md}`` (``e2e-partial.*`` for ``--quick`` or
``--only``).
"""

import datetime
import json
import sys
from pathlib import Path
from statistics import median

import e2e_nets
import measure
import numpy as np
import timing
from machine import cpu_snapshot, foreign_load, machine_info, machine_line
from peers import ConvkernPeer, TorchPeer, numpy_blas_controller
from targets import check, format_check, geomean

REPEATS = 5
BATCH_SECONDS = 0.1
MODES = ("train", "infer")
MODE_TITLE = {"train": "training step", "infer": "batch-1 inference"}
THREADS = 2
TRAIN_MIN, TRAIN_GEOMEAN_MIN, INFER_GEOMEAN_MIN = 1.0, 1.3, 1.5


def _steps(ck, torch, net, model, twin):
    """Zero-argument callables per mode and library, on fixed inputs."""
    x, labels = e2e_nets.make_batch(net, net.train_batch, seed=1)
    x1 = x[:1].copy()
    xt, yt, x1t = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(x1)
    criterion = ck.SoftmaxCrossEntropyLoss()
    optimizer = ck.SGD(model, lr=e2e_nets.LR, momentum=e2e_nets.MOMENTUM)
    torch_opt = torch.optim.SGD(twin.parameters(), lr=e2e_nets.LR,
                                momentum=e2e_nets.MOMENTUM)
    cross_entropy = torch.nn.functional.cross_entropy

    def ck_train():
        loss = criterion(model(x), labels)
        optimizer.zero_grad()
        model.backward(criterion.backward())
        optimizer.step()
        return loss

    def torch_train():
        torch_opt.zero_grad()
        loss = cross_entropy(twin(xt), yt)
        loss.backward()
        torch_opt.step()
        return loss

    def torch_infer():
        with torch.inference_mode():
            return twin(x1t)

    return {"train": {"convkern": ck_train, "torch": torch_train},
            "infer": {"convkern": lambda: model(x1), "torch": torch_infer}}


def _time(fns, repeats, pause):
    """Warm up, calibrate and time the callables round-robin; median ms per call."""
    jobs = {}
    for name, fn in fns.items():
        fn()
        jobs[name] = (fn, timing.batch_size(fn, BATCH_SECONDS)[0])
    times = timing.interleave(jobs, repeats, pause)
    return {name: {"median_ms": 1e3 * median(t), "times_ms": [1e3 * s for s in t],
                   "calls": jobs[name][1]} for name, t in times.items()}


def measure_net(peers, net, threads, repeats, pause, check):
    """Time both modes of one network at one thread count (checking the twins first
    if `check`)."""
    ck, torch = peers[0].lib, peers[1].torch
    model = net.build(ck, 0, np.float32)
    twin = e2e_nets.torch_twin(model, len(net.sample) - 1)
    if check:
        e2e_nets.check_twins(net, model, twin)
    steps = _steps(ck, torch, net, model, twin)
    result = {}
    for mode in MODES:
        model.train(mode == "train")
        twin.train(mode == "train")
        stats = _time(steps[mode], repeats, pause)
        result[mode] = {"peers": stats, "speedup": stats["torch"]["median_ms"]
                        / stats["convkern"]["median_ms"]}
        print(f"  [{threads}T] {net.key:10} {MODE_TITLE[mode]:18} convkern "
              f"{stats['convkern']['median_ms']:.3g} ms  torch "
              f"{stats['torch']['median_ms']:.3g} ms  {result[mode]['speedup']:.2f}x",
              flush=True)
    return result


def measure_block(peers, nets, threads, repeats, pause, blas, check):
    """All networks at one thread count (checking the twins first if `check`)."""
    for peer in peers:
        peer.set_threads(threads)
    if blas is not None:
        blas.limit(limits=threads)
    start = cpu_snapshot()
    results = {net.key: measure_net(peers, net, threads, repeats, pause, check)
               for net in nets}
    return {"threads": threads, "foreign_load": foreign_load(start, cpu_snapshot()),
            "networks": results}


def summarize(blocks):
    """Geometric means per mode and thread count, and the issue-11 targets."""
    means = {str(b["threads"]): {mode: geomean(r[mode]["speedup"]
                                               for r in b["networks"].values())
                                 for mode in MODES} for b in blocks}
    main = next((b for b in blocks if b["threads"] == THREADS), None)
    checks = []
    if main is not None:
        for key, r in main["networks"].items():
            checks.append(check(f"{key} training step vs torch", r["train"]["speedup"],
                                ">=", TRAIN_MIN, "x"))
    t = means.get(str(THREADS), {})
    checks.append(check("training step geometric mean vs torch", t.get("train"),
                        ">=", TRAIN_GEOMEAN_MIN, "x"))
    checks.append(check("batch-1 inference geometric mean vs torch", t.get("infer"),
                        ">=", INFER_GEOMEAN_MIN, "x"))
    return {"threads": THREADS, "geomeans": means, "targets": checks}


def _title(block):
    other = block["foreign_load"]
    title = f"{block['threads']} thread(s)"
    if other is not None:
        title += f"; other processes used {other:.2f} cores"
        if other > 0.1:
            title += " -- WARNING: machine busy, timings unreliable"
    return title


def _rows(block):
    rows = []
    for key, r in block["networks"].items():
        net = e2e_nets.BY_KEY[key]
        row = [key, "x".join(map(str, net.sample)), str(net.train_batch)]
        for mode in MODES:
            p = r[mode]["peers"]
            row += [f"{p['convkern']['median_ms']:.2f}", f"{p['torch']['median_ms']:.2f}",
                    f"{r[mode]['speedup']:.2f}x"]
        rows.append(row)
    return rows


HEADER = ["network", "sample", "batch", "train convkern ms", "train torch ms", "train x",
          "infer convkern ms", "infer torch ms", "infer x"]


def text_report(run):
    """Console report."""
    lines = [machine_line(run["machine"]), ""]
    for block in run["blocks"]:
        rows = [HEADER] + _rows(block)
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        lines.append(_title(block))
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        g = run["summary"]["geomeans"][str(block["threads"])]
        lines += [f"geometric mean: training step {g['train']:.2f}x, batch-1 inference "
                  f"{g['infer']:.2f}x", ""]
    lines.append("Targets (issue 11; speed-up = torch / convkern):")
    lines += ["  " + format_check(c) for c in run["summary"]["targets"]]
    return "\n".join(lines)


def markdown_report(run):
    """Markdown report."""
    o = run["options"]
    out = [
        "# convkern end-to-end benchmark",
        "",
        f"- Date: {run['date']}",
        f"- Command: `{run['command']}`",
        f"- Machine: {machine_line(run['machine'])}",
        f"- NumPy BLAS threads (NumPy's own products; convkern's layers do not use BLAS): {o['blas']}",
        f"- Timing: median of {o['repeats']} interleaved batches (about "
        f"{1e3 * BATCH_SECONDS:.0f} ms, at least one call) per library, pause "
        f"{o['pause']} s before each switch, then one untimed call.",
        "- Checked before timing: float64 copies of both networks (same weights) give "
        "the same logits, loss, gradients, parameters after one SGD step and batch-1 "
        "output (max |diff| <= 1e-9 x max); the float32 networks give the same logits, "
        "loss and batch-1 output (<= 1e-3 x max). float32 gradients are not compared: "
        "rounding flips near-tied ReLU and max-pool decisions, which moves whole "
        "gradient terms.",
        "- train: one step at the training batch (forward, softmax cross-entropy, "
        "backward, SGD momentum 0.9); infer: batch 1, eval mode (PyTorch under "
        "`torch.inference_mode()`). x = torch time / convkern time (> 1: convkern "
        "faster).",
        "",
        "## Networks",
        "",
    ]
    out += [f"- `{n.key}`: {n.title}; sample {'x'.join(map(str, n.sample))}, training "
            f"batch {n.train_batch}" for n in e2e_nets.NETS if n.key in o["networks"]]
    for block in run["blocks"]:
        g = run["summary"]["geomeans"][str(block["threads"])]
        out += ["", f"## {_title(block)}", "",
                "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(r) + " |" for r in _rows(block)]
        out += ["", f"Geometric mean: training step {g['train']:.2f}x, batch-1 inference "
                f"{g['infer']:.2f}x."]
    out += ["", "## Targets (issue 11)", ""]
    out += [f"- {format_check(c)}" for c in run["summary"]["targets"]]
    return "\n".join(out) + "\n"


def run_e2e(args, argv):
    """Run the end-to-end benchmark with run.py's parsed options; return the exit status."""
    try:
        if args.no_torch:
            raise ImportError
        peers = [ConvkernPeer(), TorchPeer()]
    except ImportError:
        print("the end-to-end benchmark compares against PyTorch: install torch (and do "
              "not pass --no-torch)", file=sys.stderr)
        return 1
    nets = e2e_nets.NETS
    if args.only:
        wanted = [n.strip().lower() for n in args.only.split(",")]
        unknown = [n for n in wanted if n not in e2e_nets.BY_KEY]
        if unknown:
            sys.exit(f"unknown network(s) {unknown}; choose from {', '.join(e2e_nets.BY_KEY)}")
        nets = [n for n in nets if n.key in wanted]
    repeats = args.repeats or (2 if args.quick else REPEATS)
    pause = 0.25 if args.pause is None else args.pause
    blas = numpy_blas_controller()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(peers, blas)
    print(f"convkern e2e: {', '.join(n.key for n in nets)}; threads {args.threads}",
          flush=True)
    try:
        blocks = [measure_block(peers, nets, n, repeats, pause, blas, check=i == 0)
                  for i, n in enumerate(args.threads)]
    except measure.MismatchError as err:
        print(f"VERIFICATION FAILED: {err}", file=sys.stderr)
        return 1
    run = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py"] + argv),
        "options": {"threads": args.threads, "repeats": repeats, "pause": pause,
                    "networks": [n.key for n in nets],
                    "blas": "limited to the thread count (threadpoolctl)" if blas
                    else "not limited (threadpoolctl not installed)"},
        "machine": info,
        "blocks": blocks,
        "summary": summarize(blocks),
    }
    print()
    print(text_report(run))
    stem = "e2e-partial" if args.quick or args.only else "e2e"
    paths = [args.out / f"{stem}.json", args.out / f"{stem}.md"]
    paths[0].write_text(json.dumps(run, indent=1) + "\n")
    paths[1].write_text(markdown_report(run))
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import main

    sys.exit(main(["--suite", "e2e", *sys.argv[1:]]))

"""The model-zoo benchmark: ``python bench/run.py --suite zoo``.

Times every distinct layer of :mod:`zoo` at batch 1 and at its training batch,
every pass, against PyTorch, at each thread count, with the machine's FMA peak
(:mod:`fma`) measured at the start and end of each thread count. Writes
``<out>/zoo.{json,md,png}`` (``zoo-partial.*`` for ``--quick`` or ``--only`` runs).
"""

import datetime
import sys

import chart
import measure
import zoo
import zoo_report
from fma import FmaPeak
from machine import machine_info
from peers import ConvkernPeer, TorchPeer, numpy_blas_controller
from zoo_summary import summarize

BATCH_SECONDS = 0.01
QUICK_STEP = 6
# Pause before each switch of library: libgomp's idle workers (convkern's and torch's)
# spin GOMP_SPINCOUNT = 300,000 times (well under 10 ms) before they sleep.
PAUSE = 0.01


def adaptive_repeats(single):
    """Timed batches for a pass whose slowest peer takes `single` seconds a call."""
    return 5 if single < 0.05 else 3


def select_layers(args):
    """The distinct layers to time: all, those of ``--only`` networks, or for
    ``--quick`` one in QUICK_STEP of them."""
    if args.only:
        wanted = [n.strip().lower() for n in args.only.split(",")]
        unknown = [n for n in wanted if n not in zoo.BY_KEY]
        if unknown:
            sys.exit(f"unknown network(s) {unknown}; choose from {', '.join(zoo.BY_KEY)}")
        layers = zoo.distinct_layers([zoo.BY_KEY[n] for n in wanted])
    else:
        layers = zoo.LAYERS
    return layers[::QUICK_STEP] if args.quick else layers


def run_zoo(args, argv):
    """Run the zoo benchmark with run.py's parsed options; return the exit status."""
    try:
        if args.no_torch:
            raise ImportError
        peers = [ConvkernPeer(), TorchPeer()]
    except ImportError:
        print("the zoo benchmark compares against PyTorch: install torch (and do not "
              "pass --no-torch)", file=sys.stderr)
        return 1
    layers = select_layers(args)
    expanded = zoo.workloads(layers)
    repeats = args.repeats or (2 if args.quick else adaptive_repeats)
    pause = PAUSE if args.pause is None else args.pause
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(peers, numpy_blas_controller())
    print(f"convkern zoo: {len(layers)} layers, {len(expanded)} workloads; "
          f"threads {args.threads}", flush=True)
    try:
        with FmaPeak() as fma:
            blocks = [
                measure.measure_block(
                    peers, [w for _, w in expanded], n, repeats, pause,
                    peak=("fma", lambda n=n: fma.gflops(n)), batch_seconds=BATCH_SECONDS)
                for n in args.threads
            ]
            isa = fma.isa
    except measure.MismatchError as err:
        print(f"VERIFICATION FAILED: {err}", file=sys.stderr)
        return 1
    run = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py"] + argv),
        "options": {"threads": args.threads,
                    "repeats": repeats if isinstance(repeats, int) else
                    "5 (3 when a call takes 50 ms or more)",
                    "pause": pause, "batch_seconds": BATCH_SECONDS,
                    "networks": [net.key for net in zoo.NETWORKS]},
        "machine": info,
        "fma_isa": isa,
        "layers": [{"id": lay.id, "shape": lay.shape.describe(),
                    "train_batch": lay.train_batch, "networks": list(lay.networks),
                    "sources": [list(s) for s in lay.sources]} for lay in layers],
        "blocks": blocks,
        "summary": summarize(blocks, expanded),
    }
    print()
    print(zoo_report.text_report(run))
    stem = "zoo-partial" if args.quick or args.only else "zoo"
    png = args.out / f"{stem}.png"
    chart_name = png.name if chart.write_zoo_chart(run, png) else None
    paths = zoo_report.write_reports(run, args.out, stem, chart_name)
    print("\nwrote " + ", ".join(str(p) for p in (*paths, *([png] if chart_name else []))))
    return 0

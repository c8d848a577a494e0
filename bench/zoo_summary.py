"""Summarise a zoo run: speed-ups over PyTorch, per network, thread scaling, targets.

Speed-up = torch time / convkern time of one entry (a layer at one batch, one pass).
"""

from statistics import median

from targets import check, geomean
from workloads import ConvWorkload

THREADS = 2
GEOMEAN_MIN = 1.2
ENTRY_MIN = 0.8
SCALING_MIN = 1.7
RICH_CHANNELS = 64


def channel_rich(workload):
    """True for an ungrouped convolution with at least 64 input and output channels
    at a training batch (more than one image): the layers that should scale."""
    return (isinstance(workload, ConvWorkload) and workload.groups == 1 and workload.n > 1
            and min(workload.c, workload.f) >= RICH_CHANNELS)


def _entries(blocks, threads):
    """Entries of the block measured at `threads`, keyed (workload name, pass)."""
    for block in blocks:
        if block["threads"] == threads:
            return {(e["workload"], e["pass"]): e for e in block["entries"]}
    return {}


def _speedups(entries):
    return [e["speedup"]["torch"] for e in entries]


def _stat(entries):
    """Geometric mean, minimum and count of the speed-ups of `entries`."""
    values = _speedups(entries)
    return {"geomean": geomean(values), "min": min(values, default=None),
            "count": len(values)}


def summarize(blocks, expanded):
    """Compute the figures the issue asks for.

    Parameters
    ----------
    blocks : list of dict
        Per thread count, from :func:`measure.measure_block` (peers convkern, torch).
    expanded : list of (ZooLayer, workload)
        From :func:`zoo.workloads`: which layer (and networks) each workload is.

    Returns
    -------
    dict
        ``threads`` (the thread count of the speed-up figures), ``overall``,
        ``worst`` (the minimum entry), ``below`` (entries under 0.8x), ``networks``,
        ``passes`` and ``batches`` (speed-up statistics per group, at each thread
        count), ``scaling`` (2-thread over 1-thread on channel-rich layers),
        ``peak_use`` (median % of the FMA peak on channel-rich layers) and
        ``targets`` (checks, as in :mod:`targets`).
    """
    by_name = {w.name: (layer, w) for layer, w in expanded}
    per_threads = {b["threads"]: _entries(blocks, b["threads"]) for b in blocks}
    groups = {}
    for threads, entries in per_threads.items():
        rows = list(entries.values())

        def where(pred, rows=rows):
            return _stat([e for e in rows if pred(*by_name[e["workload"]], e)])

        nets = dict.fromkeys(net for layer, _ in expanded for net in layer.networks)
        groups[threads] = {
            "overall": _stat(rows),
            "networks": {net: where(lambda lay, w, e, net=net: net in lay.networks)
                         for net in nets},
            "passes": {p: where(lambda lay, w, e, p=p: e["pass"] == p)
                       for p in dict.fromkeys(e["pass"] for e in rows)},
            "batches": {"batch 1": where(lambda lay, w, e: w.n == 1),
                        "training batch": where(lambda lay, w, e: w.n > 1)},
        }
    main = per_threads.get(THREADS, {})
    rows = sorted(main.values(), key=lambda e: e["speedup"]["torch"])
    brief = [{"workload": e["workload"], "pass": e["pass"], "shape": e["shape"],
              "speedup": e["speedup"]["torch"]} for e in rows]
    scaling = _scaling(per_threads, by_name)
    peak_use = _peak_use(per_threads, by_name)
    overall = groups.get(THREADS, {}).get("overall", {})
    targets = [
        check(f"zoo geometric mean vs torch at {THREADS} threads "
              f"({overall.get('count', 0)} entries)", overall.get("geomean"),
              ">=", GEOMEAN_MIN, "x"),
        check(f"zoo minimum entry vs torch at {THREADS} threads", overall.get("min"),
              ">=", ENTRY_MIN, "x"),
        check(f"convkern 2T over 1T, geometric mean over {scaling['count']} "
              "channel-rich entries", scaling["geomean"], ">=", SCALING_MIN, "x"),
        check("convkern 2T over 1T, minimum channel-rich entry", scaling["min"],
              ">=", SCALING_MIN, "x"),
    ]
    return {
        "threads": THREADS,
        "groups": {str(t): g for t, g in groups.items()},
        "worst": brief[0] if brief else None,
        "below": [b for b in brief if b["speedup"] < ENTRY_MIN],
        "scaling": scaling,
        "peak_use": peak_use,
        "targets": targets,
    }


def _scaling(per_threads, by_name):
    """convkern's (and torch's) 1-thread time / 2-thread time on channel-rich entries."""
    one, two = per_threads.get(1, {}), per_threads.get(2, {})
    ratios = {"convkern": [], "torch": []}
    worst = None
    for key, e2 in two.items():
        e1 = one.get(key)
        if e1 is None or not channel_rich(by_name[key[0]][1]):
            continue
        for peer, values in ratios.items():
            values.append(e1["peers"][peer]["median_ms"] / e2["peers"][peer]["median_ms"])
        if worst is None or ratios["convkern"][-1] < worst[1]:
            worst = (f"{key[0]} {key[1]}", ratios["convkern"][-1])
    return {
        "count": len(ratios["convkern"]),
        "geomean": geomean(ratios["convkern"]),
        "min": worst[1] if worst else None,
        "worst": worst[0] if worst else None,
        "torch_geomean": geomean(ratios["torch"]),
    }


def _peak_use(per_threads, by_name):
    """Median % of the FMA peak of each peer on channel-rich entries, per thread count."""
    out = {}
    for threads, entries in per_threads.items():
        rich = [e for key, e in entries.items() if channel_rich(by_name[key[0]][1])]
        out[str(threads)] = {
            peer: median([e["peers"][peer]["pct_peak"] for e in rich]) if rich else None
            for peer in ("convkern", "torch")
        }
    return out

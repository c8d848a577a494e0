"""The performance targets of issue 3, section 2, as a pass/fail checklist.

Speed-ups are torch time / convkern time at 2 threads in the same run. A target
whose inputs were not measured (no torch, a thread count or workload left out)
is reported as not measured rather than passed.
"""

from math import exp, log

from workloads import CONV_PASSES, SUITE

THREADS = 2
SPEEDUP_MIN = {
    # Channel-rich (torch reaches 85-100% of SGEMM peak) and strided: >= 0.8x.
    **{name: dict.fromkeys(CONV_PASSES, 0.8) for name in ("B", "C", "1D", "3D", "E")},
    # Small-channel: torch's input gradient runs at 3-13% of peak.
    **{name: {"fwd": 1.0, "bwd_input": 3.0, "bwd_weight": 1.0} for name in ("A", "D")},
    "pool": {"fwd": 5.0, "bwd": 0.7},
}
SCALING = ("B", "C", "E")
GEOMEAN_MIN = 1.2
SCALING_MIN = 1.6
MEMORY_MAX_MIB = 32.0
IMPORT_MAX_S = 0.3
N_ENTRIES = sum(len(w.passes) for w in SUITE)


def geomean(values):
    """Geometric mean of positive numbers; None for an empty sequence."""
    values = list(values)
    return exp(sum(map(log, values)) / len(values)) if values else None


def check(target, value, op, threshold, unit):
    """Build one check; ``ok`` is None when `value` is None (not measured)."""
    ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return {"target": target, "value": value, "op": op, "threshold": threshold,
            "unit": unit, "ok": ok}


def checklist(blocks, memory, imports):
    """Evaluate every target.

    Parameters
    ----------
    blocks : list of dict
        Per-thread-count results of :func:`measure.measure_block`.
    memory : list of dict
        Records of :func:`memory.measure_memory`.
    imports : dict
        Result of :func:`startup.import_times`.

    Returns
    -------
    list of dict
        ``target``, ``value``, ``op``, ``threshold``, ``unit`` and ``ok``.
    """
    entries = {(b["threads"], e["workload"], e["pass"]): e for b in blocks for e in b["entries"]}

    def vs_torch(name, pass_):
        entry = entries.get((THREADS, name, pass_))
        return entry["speedup"].get("torch") if entry else None

    checks = []
    for w in SUITE:
        for pass_ in w.passes:
            checks.append(check(f"{w.name} {pass_} vs torch", vs_torch(w.name, pass_),
                                 ">=", SPEEDUP_MIN[w.name][pass_], "x"))
    speedups = [c["value"] for c in checks if c["value"] is not None]
    checks.append(check(
        f"geometric mean vs torch ({len(speedups)} of {N_ENTRIES} entries)",
        geomean(speedups),
        ">=", GEOMEAN_MIN, "x",
    ))
    for name in SCALING:
        for pass_ in CONV_PASSES:
            one, two = entries.get((1, name, pass_)), entries.get((2, name, pass_))
            ratio = (one["peers"]["convkern"]["median_ms"] / two["peers"]["convkern"]["median_ms"]
                     if one and two else None)
            checks.append(check(f"{name} {pass_} convkern 2T over 1T", ratio,
                                 ">=", SCALING_MIN, "x"))
    mem = {r["pass"]: r["peak_extra_mib"] for r in memory if r["peer"] == "convkern"}
    for pass_ in CONV_PASSES:
        checks.append(check(f"C {pass_} convkern peak extra memory", mem.get(pass_),
                             "<=", MEMORY_MAX_MIB, "MiB"))
    checks.append(check("import convkern", imports["convkern"],
                         "<=", IMPORT_MAX_S, "s"))
    return checks


def format_check(check):
    """Return one checklist line, e.g. ``FAIL  B fwd vs torch >= 0.8x: 0.71x``."""
    status = {True: "PASS", False: "FAIL", None: "----"}[check["ok"]]
    unit = check["unit"]
    want = f"{check['op']} {check['threshold']:g}{unit}"
    got = "not measured" if check["value"] is None else f"{check['value']:.3g}{unit}"
    return f"{status}  {check['target']} {want}: {got}"

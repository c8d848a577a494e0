"""Render a zoo run: console summary, ``zoo.md`` and ``zoo.json``."""

import json

from machine import machine_line
from report import format_ms
from targets import format_check
from workloads import CONV_PASSES, POOL_PASSES
from zoo import BY_KEY
from zoo_summary import ENTRY_MIN, SCALING_MIN


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def _block_title(block):
    """Heading of one thread count: FMA peak and the load of other processes."""
    p, other = block["fma"], block["foreign_load"]
    title = (f"{block['threads']} thread(s): FMA peak {p['peak']:.0f} GFLOP/s "
             f"(start {p['start']:.0f}, end {p['end']:.0f})")
    if other is not None:
        title += f"; other processes used {other:.2f} cores"
        if other > 0.1:
            title += " -- WARNING: machine busy, timings unreliable"
    return title


def summary_lines(run):
    """The summary as plain text lines (console and Markdown code block)."""
    s = run["summary"]
    t = s["threads"]
    lines = []
    for threads, g in sorted(s["groups"].items()):
        o = g["overall"]
        lines.append(f"{threads} thread(s): geometric mean {_x(o['geomean'])} over "
                     f"{o['count']} entries, minimum {_x(o['min'])}")
        for name, group in (("per pass", g["passes"]), ("per batch", g["batches"])):
            lines.append(f"  {name}: " + ", ".join(
                f"{k} {_x(v['geomean'])}" for k, v in group.items()))
    if s["worst"]:
        w = s["worst"]
        lines.append(f"minimum at {t} threads: {w['workload']} {w['pass']} "
                     f"{_x(w['speedup'])}")
    lines.append(f"entries below {ENTRY_MIN}x at {t} threads: {len(s['below'])}")
    sc = s["scaling"]
    if sc["count"]:
        lines.append(
            f"2T over 1T on {sc['count']} channel-rich entries (ungrouped, >= 64 channels, "
            f"training batch): convkern geometric mean {_x(sc['geomean'])}, minimum "
            f"{_x(sc['min'])} ({sc['worst']}); torch {_x(sc['torch_geomean'])}")
    for threads, use in sorted(s["peak_use"].items()):
        if use["convkern"] is not None:
            lines.append(f"median % of FMA peak on channel-rich entries at {threads} "
                         f"thread(s): convkern {use['convkern']:.0f}%, "
                         f"torch {use['torch']:.0f}%")
    return lines


def text_report(run):
    """Console report: machine, summary, per-network geometric means, targets."""
    lines = [machine_line(run["machine"]), f"FMA loop: {run['fma_isa']}", ""]
    lines += [_block_title(b) for b in run["blocks"]] + [""]
    lines += summary_lines(run) + [""]
    lines += _network_rows(run, plain=True) + [""]
    lines.append("Targets (issue 11; speed-up = torch / convkern):")
    lines += ["  " + format_check(c) for c in run["summary"]["targets"]]
    return "\n".join(lines)


def _network_rows(run, plain=False):
    """Per-network table: distinct layers, entries, geometric mean and minimum."""
    groups = run["summary"]["groups"]
    threads = sorted(groups)
    header = ["network", "layers", "training batch"] + [
        f"{t}T {k}" for t in threads for k in ("geomean", "min")]
    rows = []
    for key in groups[threads[0]]["networks"]:
        net = BY_KEY[key]
        layers = sum(1 for lay in run["layers"] if key in lay["networks"])
        row = [f"{key} ({net.title})", str(layers), str(net.train_batch)]
        for t in threads:
            st = groups[t]["networks"][key]
            row += [_x(st["geomean"]), _x(st["min"])]
        rows.append(row)
    if plain:
        return ["  ".join(header)] + ["  ".join(r) for r in rows]
    return _table(header, rows)


def _table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows]


def _entry_rows(block, conv):
    """One row per workload (layer at one batch): each pass's rates and speed-up."""
    passes = CONV_PASSES if conv else POOL_PASSES
    by_workload = {}
    for e in block["entries"]:
        if (e["unit"] == "GFLOP/s") == conv:
            by_workload.setdefault(e["workload"], {})[e["pass"]] = e
    rows = []
    for name, entries in by_workload.items():
        layer, _, batch = name.rpartition("@")
        first = entries[passes[0]]
        row = [layer, batch, first["shape"].split(" ", 1)[1]]
        for p in passes:
            e = entries[p]
            ck, th = e["peers"]["convkern"], e["peers"]["torch"]
            row.append(format_ms(ck["median_ms"]))
            if conv:
                row += [f"{ck['rate']:.1f}", f"{ck['pct_peak']:.0f}",
                        f"{th['rate']:.1f}", f"{th['pct_peak']:.0f}"]
            else:
                row += [f"{ck['rate']:.1f}", f"{th['rate']:.1f}"]
            row.append(_x(e["speedup"]["torch"]))
        rows.append(row)
    header = ["layer", "N", "shape"]
    for p in passes:
        header += [f"{p} ms", "GFLOP/s", "% peak", "torch GFLOP/s", "% peak", "x"] if conv \
            else [f"{p} ms", "GB/s", "torch GB/s", "x"]
    return _table(header, rows)


def markdown_report(run, chart_name):
    """Return the Markdown report of a zoo run."""
    m, o = run["machine"], run["options"]
    out = [
        "# convkern model-zoo benchmark",
        "",
        f"- Date: {run['date']}",
        f"- Command: `{run['command']}`",
        f"- Machine: {machine_line(m)}",
        f"- FMA peak: `bench/fma_peak.c` ({run['fma_isa']}, independent chains in registers), "
        "measured at the start and end of each thread count; % peak is of the larger.",
        f"- Timing: {o['repeats']} interleaved batches of about "
        f"{1e3 * o['batch_seconds']:.0f} ms per peer, median reported; pause "
        f"{o['pause']} s before each switch of library, then one untimed call; every output "
        "checked against PyTorch's first (rtol 1e-3, atol 1e-4 x max).",
        f"- Layers: {len(run['layers'])} distinct shapes (list at the end), each at batch "
        "1 and at its network's training batch; float32; convolutions: forward with "
        "bias, input gradient, weight + bias gradient; max-pools with indices: forward, "
        "backward.",
        "- Speed-up x = torch time / convkern time (> 1: convkern is faster). GFLOP/s = "
        "2·N·F·C/groups·prod(K)·prod(O) / time; max-pool rates are GB/s moved.",
    ]
    if chart_name:
        out += ["", f"![speed-up over PyTorch per entry]({chart_name})"]
    out += ["", "## Summary", "", "```"] + summary_lines(run) + ["```", ""]
    out += ["## Targets (issue 11)", ""]
    out += [f"- {format_check(c)}" for c in run["summary"]["targets"]]
    out += ["", "## Per network", ""] + _network_rows(run)
    below = run["summary"]["below"]
    out += ["", f"## Entries below {ENTRY_MIN}x at {run['summary']['threads']} threads "
            f"({len(below)})", ""]
    out += _table(["layer@N", "pass", "shape", "x"],
                  [[b["workload"], b["pass"], b["shape"], _x(b["speedup"])] for b in below])
    for block in run["blocks"]:
        out += ["", f"## {_block_title(block)}", "", "### Convolutions", ""]
        out += _entry_rows(block, conv=True)
        out += ["", "### Max-pools", ""] + _entry_rows(block, conv=False)
    out += ["", "## Layers and where they come from", ""]
    out += _table(["layer", "shape (batch 1)", "training batch", "sources"], [
        [lay["id"], lay["shape"], str(lay["train_batch"]),
         "; ".join(f"{net}: {name}" for net, name in lay["sources"])]
        for lay in run["layers"]])
    out.append("")
    out.append(f"Scaling target: convkern 2-thread over 1-thread >= {SCALING_MIN}x on "
               "channel-rich entries (ungrouped convolutions with >= 64 input and output "
               "channels at the training batch).")
    return "\n".join(out) + "\n"


def _rounded(value):
    """`value` with every float rounded to 4 significant digits (a smaller JSON)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_reports(run, out_dir, stem, chart_name):
    """Write ``<stem>.json`` (compact, 4 significant digits) and ``<stem>.md`` into
    `out_dir`; return their paths."""
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(_rounded(run), separators=(",", ":")) + "\n")
    md_path.write_text(markdown_report(run, chart_name))
    return json_path, md_path

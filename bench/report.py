"""Render a run: console table, ``<stem>.json`` and ``<stem>.md``."""

import json

from machine import machine_line
from targets import format_check


def format_ms(value):
    """Format milliseconds with about four significant digits."""
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _cells(entry, names):
    """Return the row cells of one entry: per-peer ms, rate, % of peak; speed-ups."""
    cells = [entry["workload"], entry["pass"]]
    pool = entry["unit"] != "GFLOP/s"
    for name in names:
        s = entry["peers"][name]
        pct = "-" if s["pct_peak"] is None else f"{s['pct_peak']:.0f}"
        cells += [format_ms(s["median_ms"]), f"{s['rate']:.1f}" + ("*" if pool else ""), pct]
    cells += [f"{entry['speedup'][n]:.2f}x" for n in names[1:]]
    return cells


def _header(names):
    """Return the column titles matching :func:`_cells`."""
    cols = ["workload", "pass"]
    for name in names:
        cols += [f"{name} ms", "GFLOP/s", "% peak"]
    return cols + [f"vs {n}" for n in names[1:]]


DRIFT_WARN = 0.15
BUSY_WARN = 0.1


def _block_title(block):
    """Return the heading line of one thread count, with warnings of a busy machine."""
    g, other = block["sgemm"], block["foreign_load"]
    title = (
        f"{block['threads']} thread(s): SGEMM peak {g['peak']:.1f} GFLOP/s "
        f"(start {g['start']:.1f}, end {g['end']:.1f})"
    )
    if other is not None:
        title += f"; other processes used {other:.2f} cores"
    if abs(g["start"] - g["end"]) > DRIFT_WARN * g["peak"] or (other or 0) > BUSY_WARN:
        title += " -- WARNING: machine busy, timings unreliable"
    return title


POOL_NOTE = "* max-pool rates are GB/s moved (values, int64 indices); no % of peak."
SPEEDUP_NOTE = "vs X = X time / convkern time (> 1: convkern is faster)."


def text_report(run):
    """Return the console report of a run as one string."""
    names = list(run["blocks"][0]["entries"][0]["peers"])
    lines = [machine_line(run["machine"]), ""]
    for block in run["blocks"]:
        rows = [_header(names)] + [_cells(e, names) for e in block["entries"]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append(_block_title(block))
        for row in rows:
            lines.append("  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            ))
        lines.append("")
    lines += [POOL_NOTE, SPEEDUP_NOTE, ""]
    lines += _memory_lines(run["memory"]) + [""]
    lines += _import_lines(run["imports"]) + [""]
    lines.append("Targets (issue 3 section 2; 2 threads; speed-up = torch / convkern):")
    lines += ["  " + format_check(c) for c in run["targets"]]
    lines.append("  " + _tally(run["targets"]))
    return "\n".join(lines)


def _memory_lines(memory):
    """Return the memory section lines."""
    lines = ["Peak extra memory of one call on shape C (MiB, incl. output):"]
    for r in memory:
        bound = "" if r["exact"] else " (lower bound)"
        lines.append(
            f"  {r['peer']:9} {r['pass']:10} peak {r['peak_extra_mib']:7.1f}{bound}  "
            f"output {r['output_mib']:5.1f}  retained after {r['retained_mib']:6.1f}"
        )
    return lines


def _import_lines(imports):
    """Return the import-time section lines."""
    return [
        "Import time in a fresh interpreter (median, minus "
        f"{1e3 * imports['interpreter']:.0f} ms interpreter start):",
        f"  import numpy    {1e3 * imports['numpy']:6.0f} ms",
        f"  import convkern {1e3 * imports['convkern']:6.0f} ms (includes numpy)",
    ]


def _tally(checks):
    """Return e.g. ``20 pass, 3 FAIL, 2 not measured``."""
    ok = [c["ok"] for c in checks]
    return f"{ok.count(True)} pass, {ok.count(False)} FAIL, {ok.count(None)} not measured"


def markdown_report(run, chart_name):
    """Return the Markdown report of a run.

    Parameters
    ----------
    run : dict
        The run record (as written to JSON).
    chart_name : str or None
        File name of the PNG chart next to the report, or None if none was made.
    """
    m = run["machine"]
    names = list(run["blocks"][0]["entries"][0]["peers"])
    out = [
        "# convkern benchmark results",
        "",
        f"- Date: {run['date']}",
        f"- Command: `{run['command']}`",
        f"- Machine: {machine_line(m)}",
        f"- convkern: `{m['convkern_path']}`",
        f"- Timing: median of {run['options']['repeats']} interleaved batches per "
        f"peer, pause {run['options']['pause']} s between libraries and one untimed call after it; "
        "outputs verified against convkern first.",
    ]
    if m["convkern_config"]:
        out += ["", "convkern.show_config():", "", "```", m["convkern_config"], "```"]
    if chart_name:
        out += ["", f"![convkern speed-up over each peer]({chart_name})"]
    for block in run["blocks"]:
        header = _header(names)
        out += ["", f"## {_block_title(block)}", "",
                "| " + " | ".join(header) + " |",
                "|" + "---|" * len(header)]
        out += ["| " + " | ".join(_cells(e, names)) + " |" for e in block["entries"]]
    out += ["", POOL_NOTE, SPEEDUP_NOTE, "", "## Memory and import", "", "```"]
    out += _memory_lines(run["memory"]) + [""] + _import_lines(run["imports"])
    out += ["```", "", "## Targets (issue 3, section 2)", "", _tally(run["targets"]), ""]
    out += [f"- {format_check(c)}" for c in run["targets"]]
    return "\n".join(out) + "\n"


def write_reports(run, out_dir, stem, chart_name):
    """Write ``<stem>.json`` and ``<stem>.md`` into `out_dir`; return their paths."""
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(run, indent=1) + "\n")
    md_path.write_text(markdown_report(run, chart_name))
    return json_path, md_path

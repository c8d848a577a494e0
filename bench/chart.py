"""PNG charts of convkern's speed-up over each peer (matplotlib is optional)."""


def _pyplot():
    """Return (pyplot, ticker) with the Agg backend, or None (after saying why)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("matplotlib is not importable: no chart (pip install matplotlib)")
        return None
    return plt, ticker


def _speedup_axis(ax, ticker, ylabel="peer time / convkern time"):
    """Log-2 speed-up axis with a line at 1x."""
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=2))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}x" if v >= 1 else f"{v:.3g}x"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(axis="y", linewidth=0.3)
    ax.set_ylabel(ylabel)


def write_chart(run, path):
    """Draw one panel per thread count: speed-up per workload pass and peer.

    Parameters
    ----------
    run : dict
        The run record.
    path : pathlib.Path
        Output PNG file.

    Returns
    -------
    bool
        False (after printing why) if matplotlib is not importable.
    """
    mpl = _pyplot()
    if mpl is None:
        return False
    plt, ticker = mpl
    blocks = run["blocks"]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(12, 3.6 * len(blocks)), squeeze=False)
    for ax, block in zip(axes[:, 0], blocks):
        entries = block["entries"]
        labels = [f"{e['workload']} {e['pass']}" for e in entries]
        peers = list(entries[0]["speedup"])
        width = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(entries))]
            ax.bar(xs, [e["speedup"][peer] for e in entries], width, label=f"vs {peer}")
        _speedup_axis(ax, ticker)
        ax.set_xticks(range(len(entries)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_title(f"{block['threads']} thread(s), {run['date']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"convkern speed-up (>1: convkern faster); {run['machine']['cpu']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_zoo_chart(run, path):
    """Draw one panel per thread count: every zoo entry's speed-up over PyTorch,
    grouped by the network of the layer's first source, coloured by pass.

    Parameters
    ----------
    run : dict
        The zoo run record (see ``zoo_bench.run_zoo``).
    path : pathlib.Path
        Output PNG file.

    Returns
    -------
    bool
        False (after printing why) if matplotlib is not importable.
    """
    mpl = _pyplot()
    if mpl is None:
        return False
    plt, ticker = mpl
    first_net = {lay["id"]: lay["networks"][0] for lay in run["layers"]}
    nets = list(dict.fromkeys(first_net.values()))
    blocks = run["blocks"]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(12, 3.6 * len(blocks)), squeeze=False)
    for ax, block in zip(axes[:, 0], blocks):
        series = {}
        position = {net: 0 for net in nets}
        for e in block["entries"]:
            net = first_net[e["workload"].rpartition("@")[0]]
            position[net] += 1
            series.setdefault(e["pass"], []).append((net, position[net], e["speedup"]["torch"]))
        counts = dict(position)
        starts, total = {}, 0
        for net in nets:
            starts[net] = total
            total += counts[net] + 2
        for pass_, points in series.items():
            ax.scatter([starts[n] + i for n, i, _ in points], [v for _, _, v in points],
                       s=9, label=pass_)
        for level in (0.8, 1.2):
            ax.axhline(level, color="grey", linewidth=0.6, linestyle="--")
        _speedup_axis(ax, ticker, "torch time / convkern time")
        ax.set_xticks([starts[n] + counts[n] / 2 for n in nets], nets, fontsize=8,
                      rotation=15)
        ax.set_title(f"{block['threads']} thread(s), {run['date']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"convkern speed-up over PyTorch, model zoo (>1: convkern faster; dashed: "
                 f"0.8x and 1.2x); {run['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""PNG chart of convkern's speed-up over each peer (matplotlib is optional)."""


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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("matplotlib is not importable: no chart (pip install matplotlib)")
        return False
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
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=2))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(range(len(entries)), labels, fontsize=7, rotation=45, ha="right")
        ax.grid(axis="y", linewidth=0.3)
        ax.set_ylabel("peer time / convkern time")
        ax.set_title(f"{block['threads']} thread(s), {run['date']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"convkern speed-up (>1: convkern faster); {run['machine']['cpu']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""The model-zoo and end-to-end benchmarks stay runnable (nothing here is timed).

- the zoo table has at least 40 distinct layer shapes, each with its sources, and
  convkern accepts every geometry with the output shape the bench counts FLOPs for;
- the zoo and end-to-end reports render from made-up measurements;
- every end-to-end network equals its PyTorch twin (bench/e2e_nets.check_twins);
- every layer of bench/depthwise.py plans the depthwise path, and its rows render.

Skipped when bench/ is not next to tests/ (tests run from a copy of tests/ only).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import convkern as ck

BENCH = Path(__file__).resolve().parents[1] / "bench"
if not (BENCH / "zoo.py").exists():
    pytest.skip("no bench/ next to tests/", allow_module_level=True)
sys.path.insert(0, str(BENCH))

import e2e  # noqa: E402
import e2e_nets  # noqa: E402
import zoo  # noqa: E402
import zoo_report  # noqa: E402
from measure import add_rates  # noqa: E402
from workloads import ConvWorkload  # noqa: E402
from zoo_summary import summarize  # noqa: E402


def test_zoo_has_40_distinct_shapes_with_sources():
    shapes = [layer.shape for layer in zoo.LAYERS]
    assert len(set(shapes)) == len(shapes) >= 40
    ids = [layer.id for layer in zoo.LAYERS]
    assert len(set(ids)) == len(ids)
    for layer in zoo.LAYERS:
        assert layer.sources, layer.id
        for net, name in layer.sources:
            assert net in zoo.BY_KEY and name, layer.id
            assert (name, layer.shape) in zoo.BY_KEY[net].layers, layer.id
    listed = sum(len(layer.sources) for layer in zoo.LAYERS)
    assert listed == sum(len(net.layers) for net in zoo.NETWORKS)


def test_zoo_covers_every_network_and_kind():
    nets = {net for layer in zoo.LAYERS for net in layer.networks}
    assert nets == set(zoo.BY_KEY)
    convs = [layer.shape for layer in zoo.LAYERS if isinstance(layer.shape, ConvWorkload)]
    assert {len(w.spatial) for w in convs} == {1, 2, 3}
    assert any(w.groups == w.c == w.f > 1 for w in convs)  # depthwise
    assert any(max(w.dilation) > 1 for w in convs)
    assert any(max(w.stride) > 1 and max(w.kernel) >= 7 for w in convs)  # strided stem


@pytest.mark.parametrize("layer", zoo.LAYERS, ids=lambda layer: layer.id)
def test_zoo_geometry_is_valid_for_convkern(layer):
    """convkern computes the output shape the bench counts FLOPs with (empty batch)."""
    _, w = zoo.workloads((layer,))[1]
    assert w.n == layer.train_batch
    x = np.zeros((0,) + w.x_shape[1:], np.float32)
    if isinstance(w, ConvWorkload):
        y = ck.conv_forward(x, np.zeros(w.w_shape, np.float32), **w.geometry)
    else:
        y, _ = ck.maxpool_forward(x, w.kernel, stride=w.stride, padding=w.padding)
    assert y.shape[1:] == w.y_shape[1:]


def _fake_block(threads, workloads, peak):
    """A measure_block result with made-up times (torch 1.5x slower at 2 threads)."""
    entries = []
    for w in workloads:
        for i, p in enumerate(w.passes):
            ms = 1.0 + i + w.n / threads
            torch_ms = ms * (1.5 if threads == 2 else 0.9)
            entry = {"workload": w.name, "pass": p, "shape": w.describe(), "unit": w.unit,
                     "work": w.work, "peers": {"convkern": {"median_ms": ms},
                                               "torch": {"median_ms": torch_ms}}}
            add_rates(entry, peak, conv=isinstance(w, ConvWorkload))
            entries.append(entry)
    return {"threads": threads, "fma": {"start": peak, "end": peak, "peak": peak},
            "foreign_load": 0.0, "entries": entries}


def test_zoo_report_renders(tmp_path):
    expanded = zoo.workloads(zoo.LAYERS[::10])
    workloads = [w for _, w in expanded]
    blocks = [_fake_block(t, workloads, 100.0 * t) for t in (1, 2)]
    summary = summarize(blocks, expanded)
    assert summary["groups"]["2"]["overall"]["geomean"] == pytest.approx(1.5)
    assert summary["groups"]["1"]["overall"]["min"] == pytest.approx(0.9)
    assert [c["ok"] for c in summary["targets"][:2]] == [True, True]
    run = {"date": "d", "command": "c", "options": {"repeats": 5, "batch_seconds": 0.01,
                                                    "pause": 0.01},
           "machine": {"cpu": "cpu", "cores": 2, "usable_cores": 2, "python": "3",
                       "numpy": "2", "numpy_blas": "b", "convkern": "0"},
           "fma_isa": "AVX-512", "blocks": blocks, "summary": summary,
           "layers": [{"id": lay.id, "shape": lay.shape.describe(),
                       "train_batch": lay.train_batch, "networks": list(lay.networks),
                       "sources": [list(s) for s in lay.sources]}
                      for lay in zoo.LAYERS[::10]]}
    paths = zoo_report.write_reports(run, tmp_path, "zoo", None)
    text = paths[1].read_text()
    for layer in zoo.LAYERS[::10]:
        assert layer.id in text
    assert "geometric mean 1.50x" in zoo_report.text_report(run)


def test_e2e_report_renders():
    speedup = {"train": 1.5, "infer": 1.4}  # the inference target is 1.5x
    blocks = [{"threads": t, "foreign_load": 0.0, "networks": {
        net.key: {mode: {"peers": {"convkern": {"median_ms": 2.0},
                                   "torch": {"median_ms": 2.0 * speedup[mode]}},
                         "speedup": speedup[mode]} for mode in e2e.MODES}
        for net in e2e_nets.NETS}} for t in (1, 2)]
    run = {"date": "d", "command": "c",
           "options": {"repeats": 5, "pause": 0.25, "blas": "b",
                       "networks": list(e2e_nets.BY_KEY)},
           "machine": {"cpu": "cpu", "cores": 2, "usable_cores": 2, "python": "3",
                       "numpy": "2", "numpy_blas": "b", "convkern": "0"},
           "blocks": blocks, "summary": e2e.summarize(blocks)}
    assert [c["ok"] for c in run["summary"]["targets"]] == [True] * (len(e2e_nets.NETS) + 1) \
        + [False]
    text = e2e.markdown_report(run)
    assert all(f"| {key} |" in text for key in e2e_nets.BY_KEY)


def test_e2e_networks_use_the_required_layers():
    kinds = {key: {type(layer).__name__ for layer in
                   net.build(ck, 0, np.float32).layers}
             for key, net in e2e_nets.BY_KEY.items()}
    assert len(kinds) >= 4 and all({"Conv", "Dense", "Flatten"} <= k for k in kinds.values())
    mobilenet = e2e_nets.BY_KEY["mobilenet"].build(ck, 0, np.float32)
    assert any(layer.groups == layer.in_channels > 1 for layer in mobilenet.layers
               if isinstance(layer, ck.Conv))
    dims = {len(net.sample) - 1 for net in e2e_nets.NETS}
    assert dims == {1, 2, 3}


@pytest.mark.torch
@pytest.mark.parametrize("net", e2e_nets.NETS, ids=lambda net: net.key)
def test_e2e_network_equals_its_torch_twin(net):
    pytest.importorskip("torch")
    model = net.build(ck, 0, np.float32)
    twin = e2e_nets.torch_twin(model, len(net.sample) - 1)
    e2e_nets.check_twins(net, model, twin, n=2)


def test_depthwise_bench_layers_take_the_depthwise_path_and_rows_render():
    """bench/depthwise.py: every layer plans a depthwise path for the three passes it times, the
    generic path it compares with is another valid row, and a row renders."""
    pytest.importorskip("torch")
    import depthwise

    for n, layers in depthwise.SUITES.values():
        for c, size, stride in layers:
            plan = depthwise._plan(n, c, size, stride)
            for p in depthwise.PASSES:
                assert plan.paths[p] in depthwise.DEPTHWISE_PATHS, (n, c, size, stride, p)
                generic = depthwise._generic(plan, p)
                assert generic not in depthwise.DEPTHWISE_PATHS
                assert generic in plan.valid_paths(p)
    row = {"suite": "cifar", "layer": "32x32x32 s1", "pass": "forward", 1: (3e-3, 2e-3),
           2: (2e-3, 1e-3), "cpu": (1.5, 0.5, "slab_narrow")}
    text = depthwise._format(row, [1, 2])
    assert "1.50x" in text and "2.00x" in text and "generic slab_narrow: 0.50x" in text

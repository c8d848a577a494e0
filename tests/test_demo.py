"""``python -m convkern.demo``, run in-process through ``main(argv)``.

Skipped when the optional ``demo`` extra (scikit-learn, tqdm, matplotlib) is missing.
"""

import re

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

import convkern  # noqa: E402
from convkern import demo  # noqa: E402

ACCURACY_LINE = re.compile(r"test accuracy: \d\.\d{4}")


@pytest.fixture(autouse=True)
def restore_threads():
    """``--threads`` changes the process-wide thread count; put it back after each test."""
    threads = convkern.get_num_threads()
    yield
    convkern.set_num_threads(threads)


def run(argv, capsys):
    """Run the demo; return (accuracy, stdout lines)."""
    accuracy = demo.main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert ACCURACY_LINE.fullmatch(lines[-1]), lines[-1]
    assert float(lines[-1].split()[-1]) == pytest.approx(accuracy, abs=5e-5)
    return accuracy, lines


def digits_subset(tmp_path, n=200):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, images=digits.images[:n], labels=digits.target[:n])
    return path


def test_one_epoch_on_a_subset_writes_png_and_accuracy(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--epochs", "1", "--batch-size", "16", "--data", str(digits_subset(tmp_path)),
            "--out", str(out)]
    _, lines = run(argv, capsys)
    assert (out / demo.PNG_NAME).stat().st_size > 10_000
    assert any(line.startswith("epoch  1/1: loss") for line in lines)
    assert any(re.search(r"trained 1 epochs in .* s \([\d,]+ examples/s\)", line)
               for line in lines)


def test_channels_first_images_with_named_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog"])[rng.integers(0, 2, 40)]
    images = rng.random((40, 2, 12, 10))
    images[labels == "dog", 0] += 1.0  # learnable
    np.savez(tmp_path / "pets.npz", images=images, labels=labels)
    _, lines = run(["--epochs", "2", "--threads", "1", "--data", str(tmp_path / "pets.npz"),
                    "--out", str(tmp_path)], capsys)
    assert "32 training and 8 test images of shape (2, 12, 10), 2 classes, 1 thread(s)" in lines
    assert (tmp_path / demo.PNG_NAME).exists()


def test_defaults_reach_097_on_digits(tmp_path, capsys):
    # One thread: the result does not depend on it, and the tiny 8x8 convolutions gain
    # nothing from a second thread but slow down badly when the other core is busy.
    accuracy, _ = run(["--threads", "1", "--out", str(tmp_path)], capsys)
    assert accuracy >= 0.97


def test_compare_torch_prints_both_times(tmp_path, capsys):
    pytest.importorskip("torch")
    argv = ["--epochs", "1", "--threads", "1", "--data", str(digits_subset(tmp_path)),
            "--out", str(tmp_path), "--compare-torch"]
    _, lines = run(argv, capsys)
    assert any(re.fullmatch(r"training step, batch 32: convkern [\d.]+ ms, torch [\d.]+ ms",
                            line) for line in lines)


@pytest.mark.parametrize("arrays, message", [
    (dict(images=np.zeros((4, 8, 8))), "must hold arrays 'images' and 'labels'"),
    (dict(images=np.zeros((4, 8)), labels=np.zeros(4)), r"images must be \(N, H, W\)"),
    (dict(images=np.zeros((6, 3, 8)), labels=np.zeros(6)), "at least 4x4"),
    (dict(images=np.zeros((4, 8, 8)), labels=np.zeros(4)), "at least 5 images"),
])
def test_bad_data_files(arrays, message, tmp_path):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SystemExit, match=message):
        demo.main(["--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path)])


@pytest.mark.parametrize("option", ["--epochs", "--batch-size", "--threads", "--lr"])
def test_bad_options(option, capsys):
    with pytest.raises(SystemExit):
        demo.main([option, "0"])
    assert f"{option} must be" in capsys.readouterr().err

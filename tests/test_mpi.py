"""convkern.distributed under ``mpiexec -n 2``: data-parallel SGD equals one process.

Skipped when the ``mpi`` extra (mpi4py and an MPI with ``mpiexec``, e.g. the mpich
wheel) is missing; a failure when CONVKERN_REQUIRE_EXTRAS=1, as in CI. Each test runs
``mpiexec`` in a subprocess with a timeout; the ranks talk over shared memory.

What holds exactly and what to rounding:
- Both ranks end with the same bits: they start from rank 0's broadcast parameters and
  apply the same averaged gradient (an all-reduce of two ranks computes g0 + g1 on both,
  and float addition commutes).
- The result equals, bit for bit, one process that computes the gradient of each
  shard separately and averages them the same way.
- Against one process training on the whole batch it agrees to float32 rounding only:
  the batch mean of the gradient is summed in a different order ((sum of shard 0) / 8 +
  (sum of shard 1) / 8) / 2 instead of (sum of all 16) / 16.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import training
from conftest import import_extra

import_extra("mpi4py", "mpi")

import convkern as ck  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = 2
# The venv's mpiexec (the mpich wheel installs it there) is the MPI mpi4py finds.
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def mpiexec(*args, timeout=180):
    """Run ``mpiexec -n 2 python ARGS`` (one kernel thread per rank); return stdout."""
    if MPIEXEC is None:
        message = "mpiexec is not on PATH (pip install -e '.[mpi]' installs mpich's)"
        if os.environ.get("CONVKERN_REQUIRE_EXTRAS", "") not in ("", "0"):
            pytest.fail(message)
        pytest.skip(message)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([MPIEXEC, "-n", str(RANKS), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def emulate(ranks):
    """One process doing what the ranks do: each shard's gradient, then their mean."""
    models = [training.model(seed=0) for _ in range(ranks)]
    optimizers = [ck.SGD(m, lr=training.LR, momentum=training.MOMENTUM) for m in models]
    for x, labels in training.batches():
        share = len(x) // ranks
        for r, model in enumerate(models):
            training.backward(model, x[r * share:(r + 1) * share],
                              labels[r * share:(r + 1) * share])
        for name in models[0].grads:
            mean = sum(m.grads[name] for m in models[1:]) + models[0].grads[name]
            mean /= ranks
            for model in models:
                model.grads[name][...] = mean
        for optimizer in optimizers:
            optimizer.step()
    return models[0].params


def test_three_sgd_steps_on_two_ranks_match_one_process(tmp_path):
    mpiexec(os.path.join(HERE, "mpi_steps.py"), str(tmp_path))
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(RANKS)]
    start = training.model(seed=0).params
    whole_batch = training.train(training.model(seed=0)).params
    emulated = emulate(RANKS)
    assert sorted(ranks[0]) == sorted(whole_batch)
    for name, expected in whole_batch.items():
        assert not np.array_equal(ranks[0][name], start[name])  # the steps changed it
        for r in range(1, RANKS):
            np.testing.assert_array_equal(ranks[r][name], ranks[0][name])
        np.testing.assert_array_equal(ranks[0][name], emulated[name])
        # Float32 rounding: a few units in the last place of the largest entry (about
        # 1 was measured).
        bound = 10 * np.finfo(np.float32).eps * np.abs(expected).max()
        np.testing.assert_allclose(ranks[0][name], expected, rtol=0, atol=bound, err_msg=name)


def test_demo_trains_data_parallel_and_reports_once(tmp_path):
    sklearn = pytest.importorskip("sklearn.datasets")
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    digits = sklearn.load_digits()
    np.savez(tmp_path / "digits.npz", images=digits.images[:400], labels=digits.target[:400])
    out = mpiexec("-m", "convkern.demo", "--mpi", "--epochs", "3", "--data",
                  str(tmp_path / "digits.npz"), "--out", str(tmp_path))
    lines = out.splitlines()
    assert sum(line.startswith("test accuracy:") for line in lines) == 1, out
    assert re.fullmatch(r"test accuracy: \d\.\d{4}", lines[-1]), out
    assert float(lines[-1].split()[-1]) >= 0.8, out
    assert f"data-parallel over {RANKS} MPI rank(s), each with 1/{RANKS} of the training set " \
           f"and of every batch (16 images)" in lines
    assert sum(line.startswith("epoch  3/3") for line in lines) == 1, out
    assert (tmp_path / "convkern_demo.png").exists()


def test_broadcast_refuses_models_that_differ_on_some_rank(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(
        "import sys\n"
        "import convkern as ck\n"
        "from mpi4py import MPI\n"
        "from convkern.distributed import broadcast_parameters\n"
        "comm = MPI.COMM_WORLD\n"
        "model = ck.Sequential(ck.Dense(3, 2 + comm.rank))\n"
        "with open(f'{sys.argv[1]}/rank{comm.rank}.txt', 'w') as out:\n"
        "    for root in (2, 0):  # not a rank; then models that differ\n"
        "        try:\n"
        "            broadcast_parameters(model, comm, root=root)\n"
        "        except ValueError as exc:\n"
        "            print(exc, file=out)\n"
    )
    mpiexec(str(script), str(tmp_path), timeout=60)
    for r in range(RANKS):
        lines = (tmp_path / f"rank{r}.txt").read_text().splitlines()
        assert len(lines) == 2, lines
        assert lines[0] == "root must be a rank in [0, 2), got 2"
        assert lines[1].startswith("the model on rank 1 has parameters"), lines[1]


def test_shard_gives_equal_contiguous_shares():
    from convkern.distributed import shard

    class Comm:  # the two methods shard asks of an mpi4py communicator
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size

    data = np.arange(11)
    shares = [shard(data, Comm(r, 3)) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(shares), np.arange(9))
    assert all(np.shares_memory(s, data) for s in shares)
    with pytest.raises(ValueError, match="cannot shard 2 items over 3 ranks"):
        shard(data[:2], Comm(0, 3))


def test_stub_matches_the_implementation():
    from test_config import test_stubs_match_the_implementation

    test_stubs_match_the_implementation("distributed")

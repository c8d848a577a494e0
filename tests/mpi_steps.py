"""Helper of tests/test_mpi.py (not a test): data-parallel SGD steps under mpiexec.

``mpiexec -n R python tests/mpi_steps.py OUT_DIR`` runs ``training.train`` on every rank,
each on its shard of every batch with the gradients averaged over the ranks, and writes
every rank's parameters to ``OUT_DIR/rank<r>.npz``.
"""

import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import training  # noqa: E402

from convkern.distributed import allreduce_gradients, broadcast_parameters, shard  # noqa: E402


def main(out_dir):
    comm = MPI.COMM_WORLD
    # Each rank initialises differently: broadcast_parameters must make them equal.
    model = training.model(seed=comm.rank)
    broadcast_parameters(model, comm)
    training.train(model, lambda a: shard(a, comm), lambda m: allreduce_gradients(m, comm))
    np.savez(os.path.join(out_dir, f"rank{comm.rank}.npz"), **model.params)


if __name__ == "__main__":
    main(sys.argv[1])

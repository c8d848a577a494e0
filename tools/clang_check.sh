#!/usr/bin/env bash
# Build convkern with clang and check that it selects the same kernels as a gcc build:
# the widest instruction-set level the CPU has (not only the baseline), for the
# convolution micro-kernels and the max-pool rows, then run the kernel tests against it.
#
#   tools/clang_check.sh [extra pytest arguments]
#
# Installs Debian's clang and libomp-dev when clang is missing (as root, or with sudo).  The
# build is a non-editable install of a copy of the checkout into its own venv in a
# temporary directory (CONVKERN_CLANG_DIR=dir keeps it there), compiled with CC=clang.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/copy_checkout.sh"
PYTHON=${PYTHON:-python3}
if ! command -v clang >/dev/null; then
    echo "clang_check: installing clang and libomp-dev"
    SUDO=$([[ $(id -u) -eq 0 ]] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq clang libomp-dev >/dev/null
fi
if [[ -n "${CONVKERN_CLANG_DIR:-}" ]]; then
    WORK=$CONVKERN_CLANG_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/convkern-clang.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
VENV=$WORK/venv
copy_checkout "$ROOT" "$SRC"
echo "clang_check: building with $(clang --version | head -n 1) into $VENV"
"$PYTHON" -m venv "$VENV"
CC=clang "$VENV/bin/python" -m pip install --quiet --no-cache-dir "$SRC[test]"

cd "$WORK"   # not the copy: `import convkern` must find the installed clang build
"$VENV/bin/python" - <<'PY'
import convkern
from convkern import _config, _isa, _pool
c = _config.get_config()
convkern.show_config()
assert "site-packages" in convkern.__file__, "not the installed build"
assert "clang" in c["compiler_version"].lower(), f"not a clang build: {c['compiler_version']}"
widest = _isa.cpu_isa()
assert c["kernel"] == widest, f"clang build selected {c['kernel']}, the CPU has {widest}"
assert _pool.kernel_isa() == widest, f"clang pool rows are {_pool.kernel_isa()}"
print(f"clang_check: micro-kernels and pool rows at {widest}, as the CPU allows")
PY

unset CONVKERN_REQUIRE_TORCH CONVKERN_REQUIRE_EXTRAS   # no torch, dask or mpi4py in this venv
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$SRC/tests/test_paths.py" \
    "$SRC/tests/test_conv.py" "$SRC/tests/test_pool.py" "$SRC/tests/test_pool_plans.py" \
    "$SRC/tests/test_config.py" "$SRC/tests/test_isa_matrix.py" "$SRC/tests/test_ukernels.py" "$@"

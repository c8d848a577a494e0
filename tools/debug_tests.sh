#!/usr/bin/env bash
# Run the test suite against a debug build of convkern: Cython's boundscheck, wraparound
# and initializedcheck on, -O0 -g (CONVKERN_DEBUG=1, see setup.py).  An index that the
# Python face let through to a kernel then raises IndexError instead of reading or
# writing out of bounds, and the fuzz test turns that into a reported crash.
#
#   tools/debug_tests.sh [extra pytest arguments]
#
# The build is a normal (non-editable) install from a copy of the checkout (tracked and
# untracked, non-ignored files) into its own venv under a temporary directory, never in
# place, and pytest runs from outside the copy so the installed debug build is the one
# imported.  CONVKERN_DEBUG_DIR=dir keeps the copy, venv and log there; otherwise they
# are removed at exit.  The PyTorch parity tests are skipped here (torch is not
# installed in this venv); the main CI run executes them against the optimised build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/copy_checkout.sh"
PYTHON=${PYTHON:-python3}
if [[ -n "${CONVKERN_DEBUG_DIR:-}" ]]; then
    WORK=$CONVKERN_DEBUG_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/convkern-debug.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
VENV=$WORK/venv

echo "debug_tests: copying $ROOT to $SRC"
copy_checkout "$ROOT" "$SRC"   # never with an in-place build of the optimised kernels

echo "debug_tests: building with CONVKERN_DEBUG=1 into $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
CONVKERN_DEBUG=1 "$VENV/bin/python" -m pip install --quiet --no-cache-dir "$SRC[test]"

cd "$WORK"   # not the copy: `import convkern` must find the installed debug build
"$VENV/bin/python" - <<'EOF'
import convkern, convkern._build_info as b
info = b.BUILD_INFO
print("debug_tests: imported", convkern.__file__)
print("debug_tests: build", info)
assert "site-packages" in convkern.__file__, "not the installed build"
assert info.get("debug") is True, "not a CONVKERN_DEBUG build"
EOF

unset CONVKERN_REQUIRE_TORCH CONVKERN_REQUIRE_EXTRAS   # no torch, dask or mpi4py in this venv
export CONVKERN_LEAK_CALLS=${CONVKERN_LEAK_CALLS:-300}   # -O0 kernels: a shorter leak loop
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$SRC/tests" "$@"

#!/usr/bin/env bash
# Build convkern with AddressSanitizer and run the test suite under it.
#
#   tools/asan.sh [extra pytest arguments]
#
# - The build is a non-editable install of a copy of the checkout (tracked and untracked,
#   non-ignored files) into its own venv in a temporary directory, compiled with
#   CONVKERN_EXTRA_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" on top of the
#   normal -O3 flags and bounds checks OFF: the configuration users run.
# - CPython itself is not instrumented, so libasan is preloaded
#   (LD_PRELOAD=$(gcc -print-file-name=libasan.so)) and Python's allocator is switched to
#   malloc (PYTHONMALLOC=malloc) so that every NumPy buffer is an ASan-tracked allocation.
# - ASAN_OPTIONS: detect_leaks=0 (CPython keeps interned objects and arenas alive until
#   exit, which LeakSanitizer reports as leaks; tests/test_leaks.py checks our leaks),
#   allocator_may_return_null=1 (an absurd size must become MemoryError, as it does
#   without ASan, instead of an ASan abort), log_path (every process, including the
#   fuzz children and the isolated subprocess tests, writes its report to a file).
# - The run fails if pytest fails or if any process wrote an ASan ERROR report (the
#   WARNINGs logged for refused absurd allocations are expected and only counted).
#
# CONVKERN_ASAN_DIR=dir keeps the copy, venv and reports there; otherwise they are removed
# at exit (after printing any report).  CONVKERN_ASAN_FUZZ_CALLS=N also runs
# tools/fuzz.py with N calls under ASan after the suite (e.g. 100000: about 10 minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/tools/copy_checkout.sh"
PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
if [[ -n "${CONVKERN_ASAN_DIR:-}" ]]; then
    WORK=$CONVKERN_ASAN_DIR
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/convkern-asan.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
SRC=$WORK/src
VENV=$WORK/venv
LOGS=$WORK/asan-reports
LIBASAN=$("$CC" -print-file-name=libasan.so)
if [[ ! -e "$LIBASAN" ]]; then
    echo "asan: $CC has no libasan.so ($LIBASAN)" >&2
    exit 2
fi

echo "asan: copying $ROOT to $SRC"
copy_checkout "$ROOT" "$SRC"
rm -rf "$LOGS"
mkdir -p "$LOGS"

echo "asan: building with -fsanitize=address into $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
CC="$CC" CONVKERN_EXTRA_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" \
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir "$SRC[test]"

cd "$WORK"   # not the copy: `import convkern` must find the installed ASan build
# (ldd's output is read whole: `ldd | grep -q` under pipefail fails at random when grep
# exits at its first match and ldd, still writing, dies of SIGPIPE)
deps=$(ldd "$VENV"/lib/python*/site-packages/convkern/_conv*.so)
if [[ $deps != *libasan* ]]; then
    echo "asan: the installed kernels are not linked against libasan" >&2
    exit 2
fi

export LD_PRELOAD=$LIBASAN
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$LOGS/asan:${ASAN_OPTIONS:-}"
unset CONVKERN_REQUIRE_TORCH CONVKERN_REQUIRE_EXTRAS   # no torch (not instrumented), dask or mpi4py in this venv
status=0
"$VENV/bin/python" -c "import convkern; print('asan: testing', convkern.__file__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$SRC/tests" "$@" || status=$?
if [[ -n "${CONVKERN_ASAN_FUZZ_CALLS:-}" ]]; then
    # a longer fuzz run under ASan (the suite runs a short one)
    "$VENV/bin/python" "$SRC/tools/fuzz.py" --calls "$CONVKERN_ASAN_FUZZ_CALLS" \
        --seed "${CONVKERN_ASAN_FUZZ_SEED:-1}" || status=$?
fi
unset LD_PRELOAD

# allocator_may_return_null=1 makes ASan log a WARNING for every refused absurd allocation
# (the MemoryError tests); only ERROR reports count.
nwarn=$(find "$LOGS" -type f | wc -l)
reports=$(grep -l -E "ERROR: (AddressSanitizer|LeakSanitizer)" -r "$LOGS" | sort || true)
echo "asan: $nwarn process log(s) written, $(echo -n "$reports" | grep -c . || true) with an ERROR"
if [[ -n "$reports" ]]; then
    echo "asan: AddressSanitizer reported errors:" >&2
    for r in $reports; do
        echo "==== $r" >&2
        head -60 "$r" >&2
    done
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "asan: the test suite failed under ASan (status $status); no ASan report was written" >&2
    exit "$status"
fi
echo "asan: clean - no AddressSanitizer errors, test suite passed"

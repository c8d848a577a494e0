"""Build configuration: show_config(), OpenMP, stripped release builds and type stubs.

These tests run against whatever ``import convkern`` finds: an in-place build, an editable
install or an installed wheel (tools/check_wheel.sh runs them from outside the source
tree).  A build without OpenMP fails ``test_openmp_unless_serial_is_intended`` unless the
environment says a serial build is intended (``CONVKERN_EXPECT_SERIAL=1``).
"""

import ast
import importlib
import importlib.metadata
import inspect
import io
import os
import platform
import struct
import sys

import pytest

import convkern
from convkern import _config

KERNEL_NAMES = {"avx512", "avx2", "baseline", "scalar"}

# Modules with a .pyi stub next to them, and whether to compare parameter names.
STUBBED_MODULES = ["_conv", "_pool", "_openmp", "_eltwise", "conv", "plan", "pool", "pool_plans", "_threads",
                   "conv_transpose"]


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _package_dir():
    return os.path.dirname(os.path.abspath(convkern.__file__))


def test_show_config_prints_the_essentials(capsys):
    convkern.show_config()
    text = capsys.readouterr().out
    info = _config.get_config()
    assert text.startswith(f"convkern {convkern.__version__}\n")
    for key in ("python", "compiler", "compile flags", "OpenMP", "threads", "micro-kernel",
                "BLAS"):
        assert f"  {key} " in text, (key, text)
    assert ("OpenMP          on" in text) == convkern.openmp_enabled()
    assert f"micro-kernel    {info['kernel']} " in text
    assert f"threads         {convkern.get_num_threads()} " in text
    assert "BLAS            none" in text


def test_show_config_file_argument():
    buf = io.StringIO()
    assert convkern.show_config(file=buf) is None
    assert buf.getvalue().startswith("convkern ")


def test_show_config_and_openmp_enabled_are_exported():
    assert "show_config" in convkern.__all__
    assert "openmp_enabled" in convkern.__all__


def test_openmp_enabled_agrees_with_the_build():
    enabled = convkern.openmp_enabled()
    assert isinstance(enabled, bool)
    assert enabled == convkern._openmp.openmp_enabled()
    if _config.BUILD_INFO:
        assert enabled == _config.BUILD_INFO["openmp"], _config.BUILD_INFO
    if not enabled:
        assert convkern.get_num_threads() == 1


def test_openmp_unless_serial_is_intended():
    """A build without OpenMP is a failed build, unless a serial build was asked for.

    ``CONVKERN_EXPECT_SERIAL=1`` says the build under test is meant to be serial (and
    then it must be); ``CONVKERN_NO_OPENMP=1`` in the test environment also allows it.
    """
    if _env_flag("CONVKERN_EXPECT_SERIAL"):
        assert not convkern.openmp_enabled(), (
            "CONVKERN_EXPECT_SERIAL=1 but this build of convkern uses OpenMP"
        )
        return
    if _env_flag("CONVKERN_NO_OPENMP"):
        pytest.skip("CONVKERN_NO_OPENMP=1: a serial build is allowed")
    assert convkern.openmp_enabled(), (
        "convkern was built without OpenMP, so its kernels run on one thread. The build "
        "printed why ('the compiler cannot build OpenMP code'): install an OpenMP runtime "
        "(gcc: libgomp; macOS: brew install libomp; MSVC: /openmp) and rebuild, or set "
        "CONVKERN_EXPECT_SERIAL=1 if a serial build is intended.\n"
        + repr(_config.BUILD_INFO)
    )


def test_thread_count_is_reported():
    info = _config.get_config()
    assert info["num_threads"] == convkern.get_num_threads() >= 1
    if not convkern.openmp_enabled():
        return
    try:
        convkern.set_num_threads(2)
        buf = io.StringIO()
        convkern.show_config(file=buf)
        assert "threads         2 " in buf.getvalue()
    finally:
        convkern.set_num_threads(None)


def _widest_x86_isa():
    """The widest kernel level /proc/cpuinfo lists (Linux, x86-64)."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f
                      if line.startswith("flags")), [])
    if "avx2" not in flags or "fma" not in flags:
        return "baseline"
    if all(f"avx512{x}" in flags for x in ("f", "bw", "dq", "vl")):
        return "avx512"
    return "avx2"


def _ints(value):
    """Every int inside a nested dict/tuple/list."""
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, (tuple, list)):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_micro_kernel_selected_at_run_time():
    name = _config.get_config()["kernel"]
    assert name in KERNEL_NAMES
    blocks = _ints(convkern._conv.kernel_info())
    assert blocks and all(v > 0 for v in blocks)
    x86_linux = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
    if x86_linux and os.path.exists("/proc/cpuinfo"):  # gcc and clang builds alike
        widest = _widest_x86_isa()
        assert _config.get_config()["cpu_isa"] == widest
        assert name == (os.environ.get("CONVKERN_ISA") or widest)
        assert convkern._pool.kernel_isa() == name


def test_no_native_cpu_flags_unless_asked_for():
    info = _config.BUILD_INFO
    if not info:
        pytest.skip("no build info (not built by setup.py)")
    asked = info.get("extra_cflags", "")
    for key in ("cflags", "ldflags"):
        flags = info.get(key, "").split()
        native = [f for f in flags if "native" in f and f not in asked.split()]
        assert not native, f"{key} has {native}: wheels must run on every CPU"


def _elf_section_names(path):
    """Names of the sections of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not ELF64 LE"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[str_off:str_off + str_size]
    return {strtab[h[0]:strtab.index(b"\0", h[0])].decode() for h in headers}


@pytest.mark.skipif(not sys.platform.startswith("linux") or sys.maxsize < 2**32,
                    reason="ELF64 check")
@pytest.mark.parametrize("module", ["_conv", "_pool", "_openmp", "_eltwise"])
def test_release_build_is_stripped(module):
    info = _config.BUILD_INFO
    if not info or info.get("debug") or "-g" in info.get("extra_cflags", "").split():
        pytest.skip("debug build")
    assert info["stripped"], info
    path = importlib.import_module(f"convkern.{module}").__file__
    sections = _elf_section_names(path)
    assert not {s for s in sections if s.startswith(".debug")}, (path, sorted(sections))
    assert ".symtab" not in sections, path


def test_py_typed_marker_is_installed():
    assert os.path.isfile(os.path.join(_package_dir(), "py.typed"))


def _stub_functions(module):
    """{name: ast.FunctionDef} of the top-level functions in module's .pyi stub."""
    path = os.path.join(_package_dir(), module + ".pyi")
    assert os.path.isfile(path), f"missing stub {path}"
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _stub_classes(module):
    """Names of the top-level classes in module's .pyi stub."""
    with open(os.path.join(_package_dir(), module + ".pyi")) as f:
        tree = ast.parse(f.read())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def _stub_params(node):
    a = node.args
    params = [(p.arg, "POSITIONAL_OR_KEYWORD") for p in a.posonlyargs + a.args]
    params += [(p.arg, "KEYWORD_ONLY") for p in a.kwonlyargs]
    return params


@pytest.mark.parametrize("module", STUBBED_MODULES)
def test_stubs_match_the_implementation(module):
    mod = importlib.import_module(f"convkern.{module}")
    stub = _stub_functions(module)
    if hasattr(mod, "__all__"):
        public = {n for n in mod.__all__ if callable(getattr(mod, n))}
    else:
        public = {n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))}
    classes = {n for n in public if isinstance(getattr(mod, n), type)}
    assert _stub_classes(module) >= classes, f"update convkern/{module}.pyi: classes {classes}"
    public -= classes
    assert set(stub) >= public, f"update convkern/{module}.pyi: missing {public - set(stub)}"
    for name, node in stub.items():
        assert hasattr(mod, name), f"convkern/{module}.pyi declares {name}, module has none"
        sig = inspect.signature(getattr(mod, name))
        actual = [(p.name, "KEYWORD_ONLY" if p.kind is p.KEYWORD_ONLY else "POSITIONAL_OR_KEYWORD")
                  for p in sig.parameters.values()]
        assert _stub_params(node) == actual, f"update convkern/{module}.pyi: {name}{sig}"


def test_version_is_single_sourced():
    from convkern._version import __version__

    assert convkern.__version__ == __version__
    try:
        dist = importlib.metadata.distribution("convkern")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("convkern is not installed (in-place build)")
    here = os.path.realpath(convkern.__file__)
    if os.path.realpath(str(dist.locate_file("convkern/__init__.py"))) != here:
        pytest.skip("the imported convkern is not the installed distribution")
    assert dist.version == __version__

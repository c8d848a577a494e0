"""A short run of tools/fuzz.py (the long run is ``python tools/fuzz.py --calls 100000``).

The fuzzer throws random shapes, dtypes, layouts, parameter values (huge, negative,
zero, bool, float, None), forged max-pool indices, mismatched gradient shapes and
aliasing ``out=`` arrays at every public function, in child processes.  A crash is a
child killed by a signal, a hang, or any exception other than TypeError, ValueError or
MemoryError; a violation is a successful call that modified an input, changed its bits
with the thread count, or disagreed with the reference.  Both must be zero.

The self-tests prove that the fuzzer notices a segfault and a hang, so a zero here means
something.
"""

import json
import os
import subprocess
import sys

import convkern

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                    "fuzz.py")


def _fuzz(tmp_path, *args, timeout=900):
    report = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, FUZZ, "--json", str(report), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert report.exists(), proc.stdout + proc.stderr
    return proc, json.loads(report.read_text())


def test_short_fuzz_run_has_no_crashes_and_no_violations(tmp_path):
    proc, rep = _fuzz(tmp_path, "--calls", "2000", "--batch", "1000", "--seed", "20261123")
    assert rep["calls"] == 2000, proc.stdout
    assert rep["crashes"] == 0, proc.stdout
    assert rep["violations"] == 0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # both kinds of call were made in earnest: many accepted, many refused
    assert rep["ok"] > 400 and rep["refused"] > 400, rep
    # the children fuzzed the convkern this test process imports (a debug or ASan build)
    assert os.path.samefile(rep["convkern"], os.path.dirname(convkern.__file__))


def test_fuzzer_reports_a_segfault(tmp_path):
    proc, rep = _fuzz(tmp_path, "--calls", "60", "--batch", "30", "--seed", "5",
                      "--self-test-crash-at", "40")
    assert rep["crashes"] == 1 and rep["calls"] == 60, proc.stdout
    crash = rep["crash_list"][0]
    assert crash["index"] == 40 and "SIGSEGV" in crash["detail"], crash
    assert proc.returncode == 1


def test_fuzzer_reports_a_hang(tmp_path):
    # 8 s: enough for a child to start (and import a debug or ASan build) under load
    proc, rep = _fuzz(tmp_path, "--calls", "4", "--batch", "4", "--seed", "5",
                      "--self-test-hang-at", "1", "--timeout", "8")
    assert rep["crashes"] == 1 and rep["calls"] == 4, proc.stdout
    crash = rep["crash_list"][0]
    assert crash["index"] == 1 and "hang" in crash["detail"], crash

"""Release hygiene: one version, the one the installed distribution reports, and a
CHANGELOG.md in the Keep a Changelog form.

The source-tree checks (pyproject.toml, CHANGELOG.md) skip when the tests run from a
copy without the tree (cibuildwheel runs them against the installed wheel).
"""

import importlib.metadata
import os
import re

import pytest

import convkern

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PEP 440 public versions: N(.N)*, optional pre-release, post-release and dev parts.
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _source_file(name):
    path = os.path.join(ROOT, name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} is not next to tests/ (tests copied out of the source tree)")
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_installed_distribution_reports_convkern_version():
    try:
        installed = importlib.metadata.version("convkern")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("convkern is imported from a build tree, not an installed distribution")
    assert installed == convkern.__version__, (
        f"the installed metadata says {installed} but convkern.__version__ is "
        f"{convkern.__version__}: reinstall after changing convkern/_version.py"
    )


def test_version_is_pep440():
    assert PEP440.match(convkern.__version__), convkern.__version__


def test_pyproject_reads_the_version_from_convkern_version_py():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads(_source_file("pyproject.toml"))
    assert "version" not in project["project"], "the version belongs in convkern/_version.py"
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "convkern._version.__version__"}


def test_changelog_follows_keep_a_changelog():
    text = _source_file("CHANGELOG.md")
    lines = text.splitlines()
    assert lines[0] == "# Changelog"
    assert "https://keepachangelog.com/" in text
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]", headings[:1]
    versions = []
    for heading in headings[1:]:
        m = re.fullmatch(r"## \[([^\]]+)\] - (\d{4}-\d{2}-\d{2})", heading)
        assert m, f"a release heading is '## [version] - YYYY-MM-DD', got {heading!r}"
        assert PEP440.match(m.group(1)), heading
        versions.append(tuple(int(p) for p in re.findall(r"\d+", m.group(1))[:3]))
    assert versions == sorted(versions, reverse=True), "releases must be newest first"
    for line in lines:
        if line.startswith("### "):
            assert line[4:] in SECTIONS, f"unknown section {line!r}; use one of {sorted(SECTIONS)}"


def test_changelog_has_a_heading_for_the_current_version():
    text = _source_file("CHANGELOG.md")
    released = re.findall(r"^## \[([^\]]+)\] - ", text, flags=re.M)
    assert convkern.__version__ in released, (
        f"convkern.__version__ {convkern.__version__} has no '## [{convkern.__version__}] - "
        "date' heading in CHANGELOG.md"
    )

"""The public API of ``compat`` and ``uring_shim`` is typed: both packages
carry ``py.typed`` and pass ``mypy --strict`` (configuration: pyproject.toml,
``[tool.mypy]``)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_packages_are_marked_typed():
    for pkg in ("compat", "uring_shim"):
        assert os.path.isfile(os.path.join(ROOT, pkg, "py.typed")), pkg


def test_mypy_strict(tmp_path):
    # mypy is in the test extra (`make venv` installs it): missing is a failure.
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^Success: no issues found in (\d+) source files$", r.stdout, re.M)
    assert m and int(m.group(1)) >= 20, r.stdout      # both packages were checked


def test_mypy_config_is_strict():
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    section = text.split("[tool.mypy]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^strict = true$", section, re.M)
    assert re.search(r'^packages = \["compat", "uring_shim"\]$', section, re.M)


def test_the_overview_example_type_checks(tmp_path):
    """A user's program (the Python example of docs/overview.md, the package
    index page) passes mypy --strict against the annotations."""
    with open(os.path.join(ROOT, "docs", "overview.md")) as f:
        blocks = re.findall(r"^```python\n(.*?)^```$", f.read(), re.M | re.S)
    assert blocks
    prog = tmp_path / "example.py"
    prog.write_text("\n".join(blocks))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--cache-dir", os.devnull, str(prog)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

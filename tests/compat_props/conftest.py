"""Counting for the differential property tests.

``props_stats`` is a session-wide tally of the random syslet programs the
tests ran (each one on every executor).  At the end of the session it is
printed in the terminal summary and written to ``.last_count`` beside this
file, so CI logs and people can see how many random chains a run covered.
"""
import json
import os

import pytest

_STATS = {"programs": 0, "executions": 0, "batches": 0, "async": 0, "atoms": 0,
          "v5": 0, "v6": 0, "v7": 0, "v7_calls": 0, "v7_pending": 0}
_COUNT_FILE = os.path.join(os.path.dirname(__file__), ".last_count")


@pytest.fixture(scope="session")
def props_stats():
    """The session's tally (a dict the tests increment)."""
    return _STATS


def pytest_terminal_summary(terminalreporter):
    if not (_STATS["programs"] or _STATS["v7"]):
        return
    line = ("syslet differential: {programs} random programs ({atoms} atoms; {v5} as v5 and "
            "{v6} as v6 syslets) run on {executions} executor runs, {batches} exec_many batches, "
            "{async} went async; v7: {v7} sequences of {v7_calls} indirect calls, {v7_pending} "
            "pending".format(**_STATS))
    terminalreporter.write_line(line)
    try:
        with open(_COUNT_FILE, "w") as f:
            json.dump(dict(_STATS, backend_env=os.environ.get("URING_SHIM_BACKEND", "auto")), f)
            f.write("\n")
    except OSError:
        pass

"""Every code block of README.md and docs/*.md runs (issue 14, item 7).

The rule (also in docs/build.md, "Examples in the docs are tests"):

* A fenced block's language says what happens to it:

  - ``python``: run by this interpreter (``-W error``) in a subprocess;
  - ``sh`` / ``bash`` / ``shell``: run by ``bash -euo pipefail``;
    ``console``: the lines starting with ``$ `` are run the same way (the
    other lines are output, not compared);
  - ``c``: compiled with ``python -m compat config --cflags`` plus
    ``-O2 -Wall -Werror -pthread``, and, when it has a ``main``, linked with
    ``--libs`` and run;
  - ``text``: output, traces and diagrams: shown, not run;
  - MyST directives (``{eval-rst}``, ``{toctree}``, ...) are not code.

  Any other language, or none, fails ``test_every_block_is_classified``.
* Every block runs in a fresh temporary directory that mirrors the
  repository's top level through symlinks (``.venv`` is this interpreter's
  prefix), so ``examples/copy.c`` and ``.venv/bin/python`` mean what they
  mean in a clone, and files a block writes stay in the temporary directory.
  ``python`` on ``PATH`` is this interpreter; ``URING_SHIM_BACKEND`` is the
  one of this pytest run; each block has ``TIMEOUT`` seconds.
* An HTML comment right before a block (blank lines between are fine),
  invisible in the rendered docs, changes that:

  - ``<!-- doc-test: skip REASON -->``: not run; the reason is in the test
    id and the skip message;
  - ``<!-- doc-test: setup`` … ``-->``: the lines in between run first, in
    the same program or script (a fragment's imports, files and objects);

  and one right after a block:

  - ``<!-- doc-test: check`` … ``-->``: the lines in between run after it
    (assertions on what it computed).
* A shell block that runs ``make``, ``apt-get``, ``apt``, ``sudo`` or
  ``pip`` must be marked ``skip`` (they install, rebuild, or run this suite
  again); ``test_risky_shell_blocks_are_marked`` enforces it.

Besides running the blocks, this module checks lists in the docs against
the code they describe: the names of ``compat.__all__`` on the API page,
the counters, the flag values, the trace format, the make targets and the
environment variables.
"""
import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                   for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
TIMEOUT = 120

SHELLS = {"sh", "bash", "shell"}
RUNNABLE = {"python", "console", "c"} | SHELLS
SHOWN = {"text"}
#: Commands a shell block may only show (marked skip), never run from the suite.
RISKY = re.compile(r"(?m)(?:^|[;&|(`]|\$\()\s*(?:[A-Z_]+=\S*\s+)*(make|apt-get|apt|sudo|pip3?)(?=\s|$)")
#: Our environment variables: a block gets none of the caller's.
OURS = ("LD_PRELOAD", "SYSLET_COMPAT_TRACE", "SYSLET_COMPAT_DEBUG", "SYSLET_COMPAT_ABI",
        "SYSLET_COMPAT_PYTHON")


@dataclass
class Block:
    path: str           # relative to ROOT
    line: int           # of the opening fence, 1-based
    lang: str
    code: str
    skip: str = None
    setup: str = ""
    check: str = ""

    @property
    def id(self):
        tid = f"{self.path}:{self.line}:{self.lang}"
        return tid + (f":skip({self.skip})" if self.skip else "")


@dataclass
class Page:
    blocks: list = field(default_factory=list)
    problems: list = field(default_factory=list)


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARK = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<verb>[a-z]+)(?P<rest>.*)$")


def _comment(lines, i):
    """The HTML comment starting at line ``i``: (its text after the verb, index after it)."""
    body = [MARK.match(lines[i]).group("rest")]
    j = i
    while "-->" not in body[-1]:
        j += 1
        if j == len(lines):
            return None, j
        body.append(lines[j])
    text = "\n".join(body)
    return text[:text.rindex("-->")], j + 1


@functools.lru_cache(maxsize=None)
def parse(path):
    """The fenced blocks of one Markdown file, with their doc-test markers."""
    page = Page()
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().splitlines()
    pending = {}        # markers waiting for their block
    last, last_end = None, -1
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARK.match(line)
        if m:
            verb = m.group("verb")
            text, nxt = _comment(lines, i)
            where = f"{path}:{i + 1}"
            if text is None:
                page.problems.append(f"{where}: doc-test comment without -->")
                break
            if verb == "skip":
                if not text.strip():
                    page.problems.append(f"{where}: doc-test: skip needs a reason")
                pending["skip"] = " ".join(text.split())
            elif verb == "setup":
                pending["setup"] = textwrap.dedent(text.partition("\n")[2])
            elif verb == "check":
                between = lines[last_end:i] if last is not None else ["?"]
                if any(s.strip() for s in between):
                    page.problems.append(f"{where}: doc-test: check must follow a block")
                else:
                    last.check = textwrap.dedent(text.partition("\n")[2])
            else:
                page.problems.append(f"{where}: unknown doc-test verb {verb!r}")
            i = nxt
            continue
        m = FENCE.match(line)
        if m:
            indent, fence = len(m.group("indent")), m.group("fence")
            info = m.group("info").strip()
            j = i + 1
            while j < len(lines):
                c = lines[j].strip()
                if c.startswith(fence[0] * len(fence)) and not c.strip(fence[0]):
                    break
                j += 1
            if j == len(lines):
                page.problems.append(f"{path}:{i + 1}: unclosed code fence")
                break
            body = [ln[indent:] if ln[:indent].strip() == "" else ln.lstrip()
                    for ln in lines[i + 1:j]]
            lang = info.split()[0] if info else ""
            last = Block(path, i + 1, lang, "\n".join(body) + "\n", **pending)
            page.blocks.append(last)
            pending = {}
            i = last_end = j + 1
            continue
        if pending and line.strip():
            page.problems.append(f"{path}:{i + 1}: doc-test marker not followed by a code block")
            pending = {}
        i += 1
    if pending:
        page.problems.append(f"{path}: doc-test marker at the end of the file")
    return page


def all_blocks():
    return [b for p in DOC_FILES for b in parse(p).blocks]


def runnable_blocks():
    out = []
    for b in all_blocks():
        if b.lang in RUNNABLE:
            marks = [pytest.mark.skip(reason=b.skip)] if b.skip else []
            out.append(pytest.param(b, id=b.id, marks=marks))
    return out


# -- the environment a block runs in ------------------------------------------

def block_env(tmp):
    env = {k: v for k, v in os.environ.items() if k not in OURS}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["TMPDIR"] = str(tmp)
    env.pop("PYTHONPATH", None)
    return env


def workdir(tmp):
    """A directory that mirrors the repository's top level."""
    d = tmp / "work"
    d.mkdir()
    for name in os.listdir(ROOT):
        if name in (".git", ".venv") or name.startswith(".pytest"):
            continue
        os.symlink(os.path.join(ROOT, name), d / name)
    os.symlink(sys.prefix, d / ".venv")
    return d


def run(argv, cwd, env, what, source):
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what}: no result after {TIMEOUT} s\n{numbered(source)}\n"
                    f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}")
    assert p.returncode == 0, (f"{what}: exit status {p.returncode}\n{numbered(source)}\n"
                               f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


def numbered(src):
    return "\n".join(f"{n:4} | {ln}" for n, ln in enumerate(src.splitlines(), 1))


@functools.lru_cache(maxsize=None)
def compat_config(*flags):
    out = subprocess.run([sys.executable, "-m", "compat", "config", *flags], check=True,
                         capture_output=True, text=True, timeout=60)
    return shlex.split(out.stdout)


def console_commands(code):
    """The commands of a console transcript: ``$ `` lines (``\\`` continues)."""
    cmds, cont = [], False
    for ln in code.splitlines():
        if cont:
            cmds[-1] += "\n" + ln
        elif ln.startswith("$ "):
            cmds.append(ln[2:])
        else:
            continue
        cont = ln.endswith("\\")
    return "\n".join(cmds) + "\n"


def program(block):
    """What actually runs: setup, the block, check."""
    code = console_commands(block.code) if block.lang == "console" else block.code
    return "\n".join(s for s in (block.setup, code, block.check) if s)


@pytest.mark.parametrize("block", runnable_blocks())
def test_doc_block_runs(block, tmp_path):
    cwd = workdir(tmp_path)
    env = block_env(tmp_path)
    src = program(block)
    if block.lang == "python":
        f = tmp_path / "block.py"
        f.write_text(src)
        run([sys.executable, "-W", "error", str(f)], cwd, env, block.id, src)
    elif block.lang in SHELLS or block.lang == "console":
        if RISKY.search(src):       # never run: see test_risky_shell_blocks_are_marked
            pytest.fail(f"{block.id} runs make/apt-get/sudo/pip: mark it "
                        "<!-- doc-test: skip REASON -->")
        f = tmp_path / "block.sh"
        f.write_text("set -euo pipefail\n" + src)
        run(["bash", str(f)], cwd, env, block.id, src)
    elif block.lang == "c":
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if not cc:
            pytest.skip("no C compiler")
        f = tmp_path / "block.c"
        f.write_text(src)
        flags = compat_config("--cflags") + ["-O2", "-Wall", "-Werror", "-pthread"]
        if re.search(r"\bint\s+main\s*\(", src):
            exe = tmp_path / "block"
            run([cc, *flags, str(f), "-o", str(exe), *compat_config("--libs")], cwd, env,
                f"{block.id} (compile)", src)
            run([str(exe)], cwd, env, f"{block.id} (run)", src)
        else:
            run([cc, *flags, "-c", str(f), "-o", str(tmp_path / "block.o")], cwd, env,
                f"{block.id} (compile)", src)
    else:       # pragma: no cover - RUNNABLE lists the cases above
        raise AssertionError(block.lang)


def test_every_block_is_classified():
    """Every fenced block is run, shown as output, or a MyST directive, and
    every doc-test marker belongs to a block."""
    problems = [p for path in DOC_FILES for p in parse(path).problems]
    for b in all_blocks():
        if not (b.lang in RUNNABLE or b.lang in SHOWN or b.lang.startswith("{")):
            problems.append(f"{b.path}:{b.line}: block language {b.lang!r}: use one of "
                            f"{sorted(RUNNABLE | SHOWN)} (see tests/test_docs.py)")
        if (b.setup or b.check) and b.lang not in RUNNABLE:
            problems.append(f"{b.path}:{b.line}: setup/check on a block that does not run")
    assert not problems, "\n".join(problems)


def test_risky_shell_blocks_are_marked():
    """Blocks that would install, rebuild or run the suite again are skipped
    explicitly, never run."""
    bad = [b.id for b in all_blocks() if (b.lang in SHELLS or b.lang == "console")
           and not b.skip and RISKY.search(program(b))]
    assert not bad, f"mark these <!-- doc-test: skip REASON -->: {bad}"


def test_the_block_parser(tmp_path):
    """The parser finds markers, fragments and fences as documented."""
    text = textwrap.dedent("""\
        <!-- doc-test: skip a reason
        on two lines -->

        ```sh
        make test
        ```

        <!-- doc-test: setup
        x = 1
        -->
        ````python
        ```
        print(x)
        ````
        <!-- doc-test: check
        assert x == 1
        -->
        * item

          ```c
          int f(void);
          ```
        """)
    md = tmp_path / "page.md"
    md.write_text(text)
    page = parse.__wrapped__(str(md))      # an absolute path: os.path.join keeps it
    assert page.problems == []
    sh, py, c = page.blocks
    assert (sh.lang, sh.skip, sh.code) == ("sh", "a reason on two lines", "make test\n")
    assert (py.lang, py.setup, py.code, py.check) == ("python", "x = 1\n", "```\nprint(x)\n",
                                                      "assert x == 1\n")
    assert (c.lang, c.code) == ("c", "int f(void);\n")
    assert console_commands("$ echo a \\\n  b\na b\n$ true\n") == "echo a \\\n  b\ntrue\n"

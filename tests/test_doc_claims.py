"""Lists in the docs checked against the code they describe (issue 14,
item 6): what can be derived from the code is compared, not trusted.

Each test reads a table or a list out of the Markdown source and compares
it with the module, the C source or the Makefile it documents.
"""
import glob
import inspect
import os
import re

import compat
import uring_shim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def section(text, anchor):
    """The Markdown after the ``(anchor)=`` label up to the next heading of
    the same or a higher level."""
    i = text.index(f"({anchor})=")
    head = re.compile(r"^(#+) ", re.M)
    m = head.search(text, i)
    level = len(m.group(1))
    for n in head.finditer(text, m.end()):
        if len(n.group(1)) <= level:
            return text[m.start():n.start()]
    return text[m.start():]


def table_rows(text):
    """The cells of every Markdown table row in ``text`` (header and rule excluded)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"[|\-: ]+", line):
            continue
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [r for r in rows[1:]] if rows else []


def code_spans(cell):
    return re.findall(r"`([^`]+)`", cell)


# -- the compat API page ----------------------------------------------------------

def test_the_api_page_documents_every_public_name():
    """Every name of ``compat.__all__`` is on the API page: classes and
    functions through autodoc, constants by name."""
    page = read("docs/compat.md")
    missing = []
    for name in compat.__all__:
        obj = getattr(compat, name)
        if inspect.isclass(obj):
            ok = f".. autoclass:: compat.{name}\n" in page
        elif callable(obj):
            ok = f".. autofunction:: compat.{name}\n" in page
        else:
            ok = f"`{name}`" in page or f"compat.{name}" in page
        if not ok:
            missing.append(name)
    assert not missing


def test_public_methods_have_docstrings():
    """autodoc shows only documented members: a public method or property
    without a docstring would be missing from the API pages."""
    bare = []
    for mod in (compat, uring_shim):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or callable(obj)):
                continue
            if not obj.__doc__:
                bare.append(f"{mod.__name__}.{name}")
            if not inspect.isclass(obj) or issubclass(obj, (BaseException,)):
                continue
            for attr, v in vars(obj).items():
                if attr.startswith("_") or not (callable(v) or isinstance(v, property)):
                    continue
                if not getattr(v, "__doc__", None):
                    bare.append(f"{mod.__name__}.{name}.{attr}")
    assert not bare


def test_counter_table_is_the_engine_counters():
    """The counters table lists exactly ``compat.COUNTERS``, in order."""
    rows = table_rows(section(read("docs/compat.md"), "compat-counters"))
    documented = [code_spans(r[0])[0] for r in rows]
    assert documented == list(compat.COUNTERS)


def test_constant_table_values():
    """Every ``| `NAME` | value |`` row of the ABI constants table holds
    the module's value (``A`` / ``B`` rows pair up)."""
    rows = table_rows(section(read("docs/compat.md"), "compat-constants"))
    seen = set()
    for cells in rows:
        names = [n for n in code_spans(cells[0]) if hasattr(compat, n)]
        values = [v.strip(" `") for v in cells[1].split("/")]
        if cells[1].strip() == "dict":
            assert all(isinstance(getattr(compat, n), dict) for n in names)
            seen.update(names)
            continue
        assert len(names) == len(values), cells
        for n, v in zip(names, values):
            assert getattr(compat, n) == int(v, 0), n
            seen.add(n)
    consts = {n for n in compat.__all__ if isinstance(getattr(compat, n), (int, dict))
              and not n == "COUNTERS"}
    assert consts <= seen


# -- the trace format -------------------------------------------------------------

def _c_trace_kinds():
    """(what trace_member is called with, the link words of a uring line),
    read from the C engine."""
    src = "".join(read(p) for p in sorted(glob.glob(os.path.join(ROOT, "compat/csrc/engine/*.c"))))
    kinds = set(re.findall(r'trace_member\(c, s, [^,]+, "([^"]+)"\)', src))
    i = src.index("static void trace_member(")
    body = src[i:src.index("\n}\n", i)]
    links = set(re.findall(r'\? "([A-Za-z]+)"|: "([A-Za-z]+)"\)', body))
    return kinds, {w for pair in links for w in pair if w}


TRACE_LINE = re.compile(r"^\[syslet (\d+|N)\] atom (\S+) +nr=(\d+) flags=(0|0x[0-9a-f]+) -> (.*)$")


def _how_ok(how, kinds, links):
    m = re.fullmatch(r"uring op=\d+ (\S+)", how)
    if m:
        return "uring" in kinds and m.group(1) in links
    return how in kinds


def test_trace_table_is_what_the_engine_prints():
    """The trace section lists every kind of line the C engine prints, and
    no other."""
    kinds, links = _c_trace_kinds()
    assert kinds and links
    rows = table_rows(section(read("docs/compat.md"), "compat-trace"))
    documented = {code_spans(r[0])[0] for r in rows}
    shown = {h.split()[0] for h in documented}
    shown_links = {h.split()[-1] for h in documented if h.startswith("uring ")}
    assert shown == kinds
    assert shown_links == links


def test_traces_shown_in_the_docs_have_the_engine_format():
    """Every ``[syslet N] atom ...`` line in a docs page has the format
    and a kind the engine prints (a text block's annotations in parentheses
    after it are allowed)."""
    kinds, links = _c_trace_kinds()
    bad = []
    for path in DOCS:
        for n, line in enumerate(read(path).splitlines(), 1):
            if not line.startswith("[syslet "):
                continue
            m = TRACE_LINE.match(line)
            how = m and re.sub(r"\s+\(.*\)$", "", m.group(5)).strip()
            if not m or not _how_ok(how, kinds, links):
                bad.append(f"{path}:{n}: {line}")
    assert not bad


def test_traces_really_look_like_that(tmp_path):
    """The engine's own output matches the format the docs describe."""
    import subprocess
    import sys
    prog = (
        "import compat, os\n"
        "with compat.Context() as ctx:\n"
        "    ctx.engine.set_trace(True)\n"
        "    ch = ctx.chain()\n"
        "    fd = ctx.var()\n"
        "    ch.openat(compat.AT_FDCWD, b'/', os.O_RDONLY | os.O_DIRECTORY, ret=fd)\n"
        "    ch.getdents64(fd, ctx.buffer(4096), 4096, ret=True)\n"
        "    ch.close(fd)\n"
        "    ctx.exec(ch) or ctx.wait(1)\n")
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    kinds, links = _c_trace_kinds()
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("[syslet ")]
    assert len(lines) >= 3
    for line in lines:
        m = TRACE_LINE.match(line)
        assert m and _how_ok(m.group(5), kinds, links), line


# -- build, make, environment ------------------------------------------------------

def test_build_page_documents_every_make_target():
    """docs/build.md's target table names exactly the Makefile's targets."""
    mk = read("Makefile")
    phony = set(re.search(r"^\.PHONY:(.*)$", mk, re.M).group(1).split()) - {"all"}
    rows = table_rows(read("docs/build.md").split("## Targets", 1)[1].split("\n## ", 1)[0])
    documented = {m for r in rows for span in code_spans(r[0])
                  for m in re.findall(r"^make (\S+)$", span)}
    assert documented == phony


def _env_vars_read_by_the_code():
    names = set()
    pats = (r'environ(?:\.get)?\(?\[?"([A-Z][A-Z0-9_]+)"', r'getenv\("([A-Z][A-Z0-9_]+)"\)',
            r'env_is\("([A-Z][A-Z0-9_]+)"')
    # the variables with a fixed set of values, checked through one table
    # (compat._env.VARIABLES, the same as dropin.c's env_vars)
    from compat import _env
    names.update(name for name, _ in _env.VARIABLES)
    for pkg in ("compat", "uring_shim"):
        for p in glob.glob(os.path.join(ROOT, pkg, "**", "*.[pch]*"), recursive=True):
            if p.endswith((".py", ".c", ".h")):
                src = read(p)
                for pat in pats:
                    names.update(re.findall(pat, src))
    return names


def test_every_environment_variable_is_documented():
    names = _env_vars_read_by_the_code()
    assert "URING_SHIM_BACKEND" in names and "SYSLET_COMPAT_TRACE" in names
    text = "".join(read(p) for p in DOCS)
    assert {n for n in names if n not in text} == set()


# -- names mentioned in the docs exist -----------------------------------------------

CLASSES = {
    "Context": compat.Context, "Chain": compat.Chain, "Batch": compat.Batch,
    "Atom": compat.Atom, "Var": compat.Var, "Buffer": compat.Buffer, "Arena": compat.Arena,
    "Engine": compat.Engine, "Reference": compat.Reference,
    "Ring": uring_shim.Ring, "Pool": uring_shim.Pool,
}


def _resolve(dotted):
    import importlib
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(dotted)


def _has(cls, attr):
    """A class attribute, or an instance attribute its methods assign."""
    if hasattr(cls, attr):
        return True
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return re.search(rf"\bself\.{attr}\s*(?::[^=\n]+)?=", src) is not None


def test_names_the_docs_mention_exist():
    """``compat.x``, ``uring_shim.x`` and ``Context.x``-style names in code
    spans resolve (functions, methods, attributes, modules)."""
    bad = []
    for path in DOCS:
        text = read(path)
        for span in re.findall(r"`([^`\n]+)`", text):
            for m in re.finditer(r"\b((?:compat|uring_shim)(?:\.[A-Za-z_]\w*)+)", span):
                try:
                    _resolve(m.group(1))
                except (ImportError, AttributeError):
                    bad.append(f"{path}: {m.group(1)}")
            for m in re.finditer(r"(?<![\w.])(%s)\.([a-z_]\w*)" % "|".join(CLASSES), span):
                cls, attr = m.groups()
                if not _has(CLASSES[cls], attr):
                    bad.append(f"{path}: {cls}.{attr}")
    assert not bad


def test_relative_links_resolve():
    """Links from README.md and the docs to files of the repository point at
    files that exist (Sphinx checks the links between docs pages; nothing
    checks README.md's)."""
    bad = []
    for path in DOCS:
        base = os.path.dirname(os.path.join(ROOT, path))
        for target in re.findall(r"\]\(([^)\s]+)\)", read(path)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not os.path.exists(os.path.join(base, target.split("#")[0])):
                bad.append(f"{path}: {target}")
    assert not bad


# -- docs/conf.py ---------------------------------------------------------------------

def test_docs_build_stops_when_compat_does_not_import(tmp_path):
    """docs/conf.py imports compat itself: an ImportError there ends the
    build instead of leaving the API page empty."""
    import subprocess
    import sys
    prog = ("import runpy, sys\n"
            "sys.modules['compat._engine'] = None\n"        # a broken build of the engine
            "try:\n"
            f"    runpy.run_path({os.path.join(ROOT, 'docs', 'conf.py')!r})\n"
            "except ImportError:\n"
            "    sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", prog], cwd=tmp_path, timeout=60)
    assert p.returncode == 3


def test_ctypes_structures_get_a_field_table():
    """docs/conf.py's autodoc hook lists every field of every ctypes
    structure of the public modules, at its offset."""
    import ctypes
    import importlib
    import runpy
    conf = runpy.run_path(os.path.join(ROOT, "docs", "conf.py"))
    seen = 0
    for modname in ("compat", "compat.v5", "compat.v6", "compat.v7"):
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if not (isinstance(obj, type) and issubclass(obj, ctypes.Structure)):
                continue
            lines = []
            conf["_struct_fields"](None, "class", f"{modname}.{name}", obj, {}, lines)
            text = "\n".join(lines)
            for fname, *_ in obj._fields_:
                assert f"   * - {getattr(obj, fname).offset}\n     - ``{fname}``" in text
            seen += 1
    assert seen >= 6


# -- lists of system calls ------------------------------------------------------------

def _c_function(path, name):
    src = read(path)
    i = src.index(f" {name}(")
    return src[i:src.index("\n}\n", i)]


def _names(numbers):
    from compat._syscalls import NAMES
    return {NAMES[n] for n in numbers}


def _step4():
    text = read("docs/translation.md")
    return text[text.index("4. **Inline**"):text.index("5. **RWF_NOWAIT first**")]


def test_never_blocking_calls_are_the_engines():
    """translation.md's "calls that never sleep" are never_blocks()'s cases."""
    body = _c_function("compat/csrc/engine/sysclass.c", "never_blocks")
    plain = body[:body.index("case 72:")]
    numbers = {int(n) for n in re.findall(r"case (\d+):", plain)}
    step = _step4()
    listed = step[step.index("calls that never sleep"):step.index("and `fcntl` with")]
    assert set(code_spans(listed)) == _names(numbers)
    fcntl = step[step.index("and `fcntl` with"):]
    fcntl = fcntl[:fcntl.index(";")]
    cmds = re.findall(r"case (F_\w+):", body[body.index("case 72:"):])
    assert set(code_spans(fcntl)) - {"fcntl"} == set(cmds)


def test_refused_calls_are_the_engines():
    """translation.md's refused calls are is_refused()'s, and compat's REFUSED."""
    from compat._abi import REFUSED
    body = _c_function("compat/csrc/engine/sysclass.c", "is_refused")
    named = set(re.findall(r"case SYS_(\w+):", body))
    step = _step4()
    listed = step[step.index("refused calls"):step.index("numbers at or above")]
    spans = {s for s in code_spans(listed) if s != "-EINVAL" and not s.startswith("umem")}
    assert spans == named == _names(n for n in REFUSED if n < 1000)


def test_builder_call_table_numbers():
    """compat.md's counts and lists of the builder's call table are the table's."""
    from compat._argcheck import SIGNATURES, THREAD_STATE
    text = read("docs/compat.md")
    sized = sum(1 for sig in SIGNATURES.values() for p in sig if p.dir not in (None, "map"))
    maps = {name for name, sig in SIGNATURES.items() if any(p.dir == "map" for p in sig)}
    nmaps = sum(1 for sig in SIGNATURES.values() for p in sig if p.dir == "map")
    m = re.search(r"lists, for (\d+) x86_64 calls.*?\((\d+) sized pointers, plus the (\d+) "
                  r"mapping addresses", text, re.S)
    assert m and tuple(map(int, m.groups())) == (len(SIGNATURES), sized, nmaps)
    rows = table_rows(section(text, "compat-builder-checks"))
    row = next(r for r in rows if "as the address of" in r[0])
    assert set(code_spans(row[0].split("as the address of")[1])) == maps
    row = next(r for r in rows if "whatever the arguments" in r[0])
    assert set(code_spans(row[0])) == set(THREAD_STATE)


def test_the_uring_shim_page_covers_every_constant():
    """Every constant of ``uring_shim.__all__`` is named on its page, or
    covered by a ``PREFIX_*`` row."""
    page = read("docs/uring_shim.md")
    groups = [g[:-1] for g in re.findall(r"`([A-Z_]+_\*)`", page)]
    bare = [n for n in uring_shim.__all__
            if not callable(getattr(uring_shim, n)) and n != "__version__"
            and f"`{n}`" not in page and not any(n.startswith(g) for g in groups)]
    assert groups and not bare


# -- files and tests the docs cite -------------------------------------------------------

#: Paths the docs name that are not files of this repository, on purpose.
NOT_OURS = {"kernel/async.c"}       # the 2007 kernel's (decisions.md)


def test_files_the_docs_name_exist():
    """A code span that names a file of the repository (``dir/file.ext``)
    names one that exists, from the top or from ``compat/csrc``
    (``engine/plan.c``); generated paths (under ``_build``) and
    ``<placeholders>`` are left out, and so is anything that does not start
    with an entry of those two directories."""
    bases = ("", "compat/csrc")
    tops = {e for b in bases for e in os.listdir(os.path.join(ROOT, b))}
    bad = []
    for path in DOCS:
        for span in re.findall(r"`([^`\n]+)`", read(path)):
            for tok in re.findall(r"(?<![\w<$/.~-])((?:[\w.-]+/)+[\w.*-]+)", span):
                if tok in NOT_OURS or "_build" in tok or tok.split("/")[0] not in tops:
                    continue
                found = any(glob.glob(os.path.join(ROOT, base, tok)) for base in bases)
                if not found:
                    bad.append(f"{path}: {tok}")
    assert not bad


def test_tests_the_docs_name_exist():
    """Every ``test_...`` name a page cites is a test function of the suite."""
    src = "".join(read(p) for p in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"),
                                              recursive=True))
    bad = [f"{path}: {name}" for path in DOCS
           for name in sorted(set(re.findall(r"`(test_\w+)`", read(path))))
           if not re.search(rf"def {name}\b", src)]
    assert not bad


def test_calls_the_docs_show_take_those_keywords():
    """``ctx.wait(n, timeout=t)``, ``Context(ring_slots=0)``,
    ``ch.read(fd, buf, n, ret=v)``... in code spans: the method exists and
    takes every keyword shown."""
    from compat._syscalls import NR
    owners = dict(CLASSES, ctx=compat.Context, ch=compat.Chain, chain=compat.Chain,
                  buf=compat.Buffer, arena=compat.Arena, engine=compat.Engine)
    call = re.compile(r"(?<![\w.])(%s)(?:\.(\w+))?\(([^()]*)\)" % "|".join(owners))
    bad, seen = [], 0
    for path in DOCS:
        for span in re.findall(r"`([^`\n]+)`", read(path)):
            for m in call.finditer(span):
                name, meth, args = m.groups()
                cls = owners[name]
                if meth and cls is compat.Chain and meth in NR:
                    params = {"ret", "flags", "link"}       # chain.<syscall>(*args, ...)
                elif meth and not hasattr(cls, meth):
                    bad.append(f"{path}: {m.group(0)}")
                    continue
                else:
                    params = set(inspect.signature(getattr(cls, meth) if meth else cls).parameters)
                bad += [f"{path}: {m.group(0)} ({k}=)" for k in re.findall(r"(\w+)\s*=(?!=)", args)
                        if k not in params]
                seen += 1
    assert seen > 20 and not bad

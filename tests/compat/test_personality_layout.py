"""Layouts of the later personalities (LATER_ABIS.md sections 2-4 and 6):
the spec's tables, the ctypes structures of compat.v5 / v6 / v7 and the C
headers syslet-v5.h / -v6.h / -v7.h (compiled, with the spec's field
names -- but the atom's cookie, which these headers call ``private_`` in C
too, docs/migration.md), and the headers' static assertions in C89 ...
C11 and C++."""
import ctypes
import os
import shutil
import subprocess

import pytest

import compat
import compat.v1
import compat.v5
import compat.v6
import compat.v7

INCLUDE = os.path.join(os.path.dirname(compat.__file__), "include")

# (struct, field) -> (offset, size), as the spec's tables give them
SPEC = {
    "v5": {
        ("syslet_uatom", "flags"): (0, 8), ("syslet_uatom", "nr"): (8, 8),
        ("syslet_uatom", "ret_ptr"): (16, 8), ("syslet_uatom", "next"): (24, 8),
        ("syslet_uatom", "arg_ptr"): (32, 48), ("syslet_uatom", "private"): (80, 8),
        ("async_head_user", "kernel_ring_idx"): (0, 8), ("async_head_user", "user_ring_idx"): (8, 8),
        ("async_head_user", "completion_ring"): (16, 8), ("async_head_user", "ring_size_bytes"): (24, 8),
        ("async_head_user", "head_stack"): (32, 8), ("async_head_user", "head_eip"): (40, 8),
        ("async_head_user", "new_thread_stack"): (48, 8), ("async_head_user", "new_thread_eip"): (56, 8),
    },
    "v6": {
        ("syslet_uatom", "flags"): (0, 4), ("syslet_uatom", "nr"): (4, 4),
        ("syslet_uatom", "ret_ptr"): (8, 8), ("syslet_uatom", "next"): (16, 8),
        ("syslet_uatom", "arg_ptr"): (24, 48), ("syslet_uatom", "private"): (72, 8),
        ("async_head_user", "kernel_ring_idx"): (0, 8), ("async_head_user", "user_ring_idx"): (8, 8),
        ("async_head_user", "completion_ring_ptr"): (16, 8), ("async_head_user", "ring_size_bytes"): (24, 8),
        ("async_head_user", "head_stack"): (32, 8), ("async_head_user", "head_ip"): (40, 8),
        ("async_head_user", "new_thread_stack"): (48, 8), ("async_head_user", "new_thread_ip"): (56, 8),
    },
    "v7": {
        ("indirect_registers", "rax"): (0, 8), ("indirect_registers", "rdi"): (8, 8),
        ("indirect_registers", "rsi"): (16, 8), ("indirect_registers", "rdx"): (24, 8),
        ("indirect_registers", "r10"): (32, 8), ("indirect_registers", "r8"): (40, 8),
        ("indirect_registers", "r9"): (48, 8),
        ("syslet_args", "ring_ptr"): (0, 8), ("syslet_args", "caller_data"): (8, 8),
        ("syslet_args", "frame"): (16, 16),
        ("syslet_frame", "ip"): (0, 8), ("syslet_frame", "sp"): (8, 8),
        ("indirect_params", "file_flags"): (0, 4), ("indirect_params", "syslet"): (0, 32),
        ("syslet_completion", "status"): (0, 8), ("syslet_completion", "caller_data"): (8, 8),
        ("syslet_ring", "kernel_head"): (0, 4), ("syslet_ring", "user_tail"): (4, 4),
        ("syslet_ring", "elements"): (8, 4), ("syslet_ring", "wait_group"): (12, 4),
        ("syslet_ring", "comp"): (16, 0),
    },
}
SIZES = {
    "v5": {"syslet_uatom": 88, "async_head_user": 64},
    "v6": {"syslet_uatom": 80, "async_head_user": 64},
    "v7": {"indirect_registers": 56, "syslet_args": 32, "syslet_frame": 16, "indirect_params": 32,
           "syslet_completion": 16, "syslet_ring": 16},
}
UNIONS = {"indirect_params"}
NUMBERS = {
    "v5": {"__NR_async_exec": 1010, "__NR_async_wait": 1011, "__NR_umem_add": 1012,
           "__NR_async_thread": 1013},
    "v6": {"__NR_async_exec": 1020, "__NR_async_wait": 1021, "__NR_umem_add": 1022,
           "__NR_async_thread": 1023},
    "v7": {"__NR_indirect": 1030, "__NR_syslet_ring_wait": 1031, "ESYSLETPENDING": 132},
}
HISTORICAL = {
    "v5": {"async_exec": 280, "async_wait": 281, "umem_add": 282, "async_thread": 283},
    "v6": {"async_exec": 286, "async_wait": 287, "umem_add": 288, "async_thread": 289},
    "v7": {"indirect": 286, "syslet_ring_wait": 287},
}
FLAGS = {"SYSLET_ASYNC": 0x01, "SYSLET_SYNC": 0x02, "SYSLET_NO_COMPLETE": 0x04,
         "SYSLET_STOP_ON_NONZERO": 0x08, "SYSLET_STOP_ON_ZERO": 0x10, "SYSLET_STOP_ON_NEGATIVE": 0x20,
         "SYSLET_STOP_ON_NON_POSITIVE": 0x40, "SYSLET_STOP_MASK": 0x78,
         "SYSLET_SKIP_TO_NEXT_ON_STOP": 0x80}
MODULES = {"v5": compat.v5, "v6": compat.v6, "v7": compat.v7}


def cc():
    c = shutil.which("gcc") or shutil.which("cc")
    if c is None:
        pytest.skip("no C compiler")
    return c


def compile_and_run(tmp_path, name, source):
    src = tmp_path / f"{name}.c"
    exe = tmp_path / name
    src.write_text(source)
    subprocess.run([cc(), "-std=gnu11", "-Wall", "-Werror", "-I", INCLUDE, "-o", str(exe), str(src)],
                   check=True, capture_output=True, text=True, timeout=60)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture(scope="module", params=["v5", "v6", "v7"])
def header(request, tmp_path_factory):
    """(personality, {(struct, field): (offset, size)}, {struct: size}, {const: value})
    as the compiler sees syslet-<personality>.h."""
    p = request.param
    kind = lambda s: "union" if s in UNIONS else "struct"  # noqa: E731
    lines = []
    for (s, f) in SPEC[p]:
        c = "private_" if f == "private" else f       # (docs/migration.md)
        size = "0" if (s, f) == ("syslet_ring", "comp") else f"sizeof((({kind(s)} {s} *)0)->{c})"
        lines.append(f'printf("F {s} {f} %zu %zu\\n", offsetof({kind(s)} {s}, {c}), (size_t){size});')
    for s in SIZES[p]:
        lines.append(f'printf("S {s} %zu\\n", sizeof({kind(s)} {s}));')
    consts = list(NUMBERS[p]) + (list(FLAGS) if p != "v7" else [])
    for n in consts:
        lines.append(f'printf("C {n} %ld\\n", (long)({n}));')
    src = (f"#include <stdio.h>\n#include <stddef.h>\n#include <syslet-{p}.h>\n"
           "int main(void)\n{\n    " + "\n    ".join(lines) + "\n    return 0;\n}\n")
    try:
        out = compile_and_run(tmp_path_factory.mktemp("layout-" + p), "layout_" + p, src)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"syslet-{p}.h does not compile with the spec's names:\n{e.stderr[-3000:]}")
    fields, sizes, consts_ = {}, {}, {}
    for ln in out.splitlines():
        k, *rest = ln.split()
        if k == "F":
            fields[(rest[0], rest[1])] = (int(rest[2]), int(rest[3]))
        elif k == "S":
            sizes[rest[0]] = int(rest[1])
        else:
            consts_[rest[0]] = int(rest[1])
    return p, fields, sizes, consts_


def test_c_header_matches_the_spec(header):
    p, fields, sizes, consts = header
    assert fields == SPEC[p]
    assert sizes == SIZES[p]
    want = dict(NUMBERS[p], **(FLAGS if p != "v7" else {}))
    assert consts == want


def _ctypes_field(mod, struct, field):
    d = getattr(getattr(mod, struct), field)
    return d.offset, d.size


@pytest.mark.parametrize("p", ["v5", "v6", "v7"])
def test_ctypes_structures_match_the_spec(p):
    mod = MODULES[p]
    for (s, f), want in SPEC[p].items():
        assert _ctypes_field(mod, s, f) == want, (s, f)
    for s, n in SIZES[p].items():
        assert ctypes.sizeof(getattr(mod, s)) == n, s


@pytest.mark.parametrize("p", ["v5", "v6"])
def test_module_constants(p):
    mod = MODULES[p]
    assert mod.ATOM_SIZE == SIZES[p]["syslet_uatom"]
    assert mod.AHU_SIZE == 64
    for n, v in NUMBERS[p].items():
        assert getattr(mod, n) == v
    for n, v in FLAGS.items():
        assert getattr(mod, n) == v
    assert mod.HISTORICAL_NR == HISTORICAL[p]
    assert mod.SYSLET_FLAGS_ALL == 0xFF


def test_v7_module_constants():
    assert compat.v7.ESYSLETPENDING == 132
    assert compat.v7.__NR_indirect == 1030 and compat.v7.__NR_syslet_ring_wait == 1031
    assert compat.v7.HISTORICAL_NR == HISTORICAL["v7"]
    ring = compat.v7.ring_type(4)
    assert ctypes.sizeof(ring) == 16 + 16 * 4
    assert ring.comp.offset == 16 and ring.elements.offset == 8


def test_v5_atoms_are_v1_atoms():
    assert compat.v5.syslet_uatom is compat.v1.syslet_uatom
    assert compat.v1.ATOM_SIZE == compat.v5.ATOM_SIZE == 88


PINNED = {
    "v1": ["async_register", "async_exec", "async_wait", "async_unregister", "umem_add",
           "syslet_uatom", "async_head_user", "ATOM_SIZE", "AHU_SIZE"],
    "v5": ["async_exec", "async_wait", "umem_add", "async_thread", "syslet_uatom",
           "async_head_user", "ATOM_SIZE", "AHU_SIZE"],
    "v7": ["indirect", "syslet_ring_wait", "indirect_registers", "syslet_args", "syslet_frame",
           "syslet_completion", "syslet_ring", "ESYSLETPENDING"],
}
PINNED["v6"] = PINNED["v5"]


@pytest.mark.parametrize("p", ["v1", "v5", "v6", "v7"])
def test_pinned_python_names(p):
    """LATER_ABIS.md section 6: the names outside tests use."""
    import importlib
    mod = importlib.import_module(f"compat.{p}")
    for name in PINNED[p]:
        assert hasattr(mod, name), name
        assert name in mod.__all__, name
    for name in PINNED[p]:
        if callable(getattr(mod, name)) and not isinstance(getattr(mod, name), type):
            assert getattr(mod, name).__doc__, name


STANDARDS = [(p, std) for p in ("v5", "v6", "v7")
             for std in ("c89", "c99", "c11", "gnu17", "c++98", "c++11", "c++17")
             # v6's and v7's u64 fields are long long: C99 and C++11 on
             if p == "v5" or std not in ("c89", "c++98")]


@pytest.mark.parametrize("p,std", STANDARDS)
def test_header_compiles_and_its_static_asserts_hold(tmp_path, p, std):
    """Pedantic C and C++ (-Werror); the headers' size assertions
    (_Static_assert in C11, static_assert in C++11) are active where the
    language has them, and a wrong size would not compile."""
    cxx = std.startswith("c++")
    compiler = (shutil.which("g++") or shutil.which("c++")) if cxx else cc()
    if compiler is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / ("t.cc" if cxx else "t.c")
    src.write_text(f"#include <syslet-{p}.h>\nint main(void) {{ return 0; }}\n")
    r = subprocess.run([compiler, f"-std={std}", "-pedantic", "-Wall", "-Werror", "-I", INCLUDE,
                        "-c", str(src), "-o", str(tmp_path / "t.o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("p", ["v5", "v6", "v7"])
def test_header_static_asserts_catch_a_wrong_size(tmp_path, p):
    """The assertions are live: the same header with one size changed does
    not compile under C11."""
    with open(os.path.join(INCLUDE, f"syslet-{p}.h")) as f:
        text = f.read()
    first = {"v5": "== 88", "v6": "== 80", "v7": "== 56"}[p]
    assert first in text
    bad = tmp_path / f"syslet-{p}.h"
    bad.write_text(text.replace(first, first + " + 8"))
    src = tmp_path / "t.c"
    src.write_text(f'#include "syslet-{p}.h"\nint main(void) {{ return 0; }}\n')
    r = subprocess.run([cc(), "-std=c11", "-I", str(tmp_path), "-c", str(src), "-o",
                        str(tmp_path / "t.o")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0

"""ABI v1 layout (SYSLET_SPEC.md section 1 and 6): the C compiler's offsets
for the structures written from the spec table, against compat's ctypes
structures; flag values; system call numbers."""
import ctypes
import os
import shutil
import subprocess

import pytest

import compat
from compat import async_head_user, syslet_uatom

# The v1 structures exactly as the spec's tables give them.
SPEC_STRUCTS = r"""
struct syslet_uatom {
    unsigned long flags;
    unsigned long nr;
    long *ret_ptr;
    struct syslet_uatom *next;
    unsigned long *arg_ptr[6];
    void *private;
};
struct async_head_user {
    struct syslet_uatom **completion_ring;
    unsigned long ring_size_bytes;
    unsigned long max_nr_threads;
};
"""

PRINTER = r"""
#include <stdio.h>
#include <stddef.h>
%(decls)s
#define F(s, f) printf("%%s %%s %%zu %%zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
int main(void)
{
    F(syslet_uatom, flags); F(syslet_uatom, nr); F(syslet_uatom, ret_ptr);
    F(syslet_uatom, next); F(syslet_uatom, arg_ptr); F(syslet_uatom, private);
    for (int i = 0; i < 6; i++)
        printf("syslet_uatom arg_ptr[%%d] %%zu %%zu\n", i,
               offsetof(struct syslet_uatom, arg_ptr) + i * sizeof(unsigned long *),
               sizeof(((struct syslet_uatom *)0)->arg_ptr[0]));
    F(async_head_user, completion_ring); F(async_head_user, ring_size_bytes);
    F(async_head_user, max_nr_threads);
    printf("sizeof syslet_uatom %%zu\n", sizeof(struct syslet_uatom));
    printf("sizeof async_head_user %%zu\n", sizeof(struct async_head_user));
    printf("alignof syslet_uatom %%zu\n", _Alignof(struct syslet_uatom));
    printf("alignof async_head_user %%zu\n", _Alignof(struct async_head_user));
%(extra)s
    return 0;
}
"""

EXPECTED_UATOM = {"flags": (0, 8), "nr": (8, 8), "ret_ptr": (16, 8), "next": (24, 8),
                  "arg_ptr": (32, 48), "private": (80, 8)}
EXPECTED_AHU = {"completion_ring": (0, 8), "ring_size_bytes": (8, 8), "max_nr_threads": (16, 8)}

FLAGS = {
    "SYSLET_ASYNC": 0x01, "SYSLET_SYNC": 0x02, "SYSLET_NO_COMPLETE": 0x04,
    "SYSLET_STOP_ON_NONZERO": 0x08, "SYSLET_STOP_ON_ZERO": 0x10,
    "SYSLET_STOP_ON_NEGATIVE": 0x20, "SYSLET_STOP_ON_NON_POSITIVE": 0x40,
    "SYSLET_STOP_MASK": 0x78, "SYSLET_SKIP_TO_NEXT_ON_STOP": 0x80,
}
SYSCALL_NUMBERS = {"__NR_async_register": 1000, "__NR_async_exec": 1001, "__NR_async_wait": 1002,
                   "__NR_async_unregister": 1003, "__NR_umem_add": 1004}

HEADER = os.path.join(os.path.dirname(compat.__file__), "include", "syslet.h")


def compile_and_run(tmp_path, source, include_dirs=()):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "layout.c"
    exe = tmp_path / "layout"
    src.write_text(source)
    cmd = [gcc, "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), str(src)]
    for d in include_dirs:
        cmd[1:1] = ["-I", d]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10).stdout
    fields, sizes = {}, {}
    for line in out.splitlines():
        a, b, c, *d = line.split()
        if a in ("sizeof", "alignof"):
            sizes[(a, b)] = int(c)
        else:
            fields[(a, b)] = (int(c), int(d[0]))
    return fields, sizes


def ctypes_fields(cls):
    return {name: (getattr(cls, name).offset, getattr(cls, name).size) for name, _ in cls._fields_}


@pytest.fixture(scope="module")
def spec_layout(tmp_path_factory):
    return compile_and_run(tmp_path_factory.mktemp("layout"),
                           PRINTER % {"decls": SPEC_STRUCTS, "extra": ""})


def test_spec_table_compiles_to_the_v1_sizes(spec_layout):
    fields, sizes = spec_layout
    assert sizes[("sizeof", "syslet_uatom")] == 88
    assert sizes[("sizeof", "async_head_user")] == 24
    assert sizes[("alignof", "syslet_uatom")] == 8
    assert sizes[("alignof", "async_head_user")] == 8
    for f, v in EXPECTED_UATOM.items():
        assert fields[("syslet_uatom", f)] == v, f
    for i in range(6):
        assert fields[("syslet_uatom", f"arg_ptr[{i}]")] == (32 + 8 * i, 8)
    for f, v in EXPECTED_AHU.items():
        assert fields[("async_head_user", f)] == v, f


def test_ctypes_uatom_matches_the_compiler(spec_layout):
    fields, sizes = spec_layout
    assert ctypes.sizeof(syslet_uatom) == sizes[("sizeof", "syslet_uatom")] == compat.ATOM_SIZE
    assert ctypes.alignment(syslet_uatom) == sizes[("alignof", "syslet_uatom")]
    got = ctypes_fields(syslet_uatom)
    assert list(got) == list(EXPECTED_UATOM)
    for name, v in got.items():
        assert v == fields[("syslet_uatom", name)], name


def test_ctypes_ahu_matches_the_compiler(spec_layout):
    fields, sizes = spec_layout
    assert ctypes.sizeof(async_head_user) == sizes[("sizeof", "async_head_user")] == compat.AHU_SIZE
    assert ctypes.alignment(async_head_user) == sizes[("alignof", "async_head_user")]
    got = ctypes_fields(async_head_user)
    assert list(got) == list(EXPECTED_AHU)
    for name, v in got.items():
        assert v == fields[("async_head_user", name)], name


def test_ctypes_bytes_land_where_the_c_layout_says():
    """Writing each field through ctypes puts the value at the spec offset."""
    a = syslet_uatom()
    a.flags, a.nr, a.ret_ptr, a.next = 0x1111, 0x2222, 0x3333, 0x4444
    for i in range(6):
        a.arg_ptr[i] = 0x5550 + i
    a.private = 0x6666
    raw = bytes(a)
    words = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 88, 8)]
    assert words == [0x1111, 0x2222, 0x3333, 0x4444] + [0x5550 + i for i in range(6)] + [0x6666]
    h = async_head_user(0x7770, 0x7778, (1 << 64) - 1)
    raw = bytes(h)
    assert [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 24, 8)] == \
        [0x7770, 0x7778, (1 << 64) - 1]


@pytest.mark.parametrize("name,value", sorted(FLAGS.items()))
def test_flag_values(name, value):
    assert getattr(compat, name) == value


def test_stop_mask_is_the_four_stop_flags():
    assert compat.SYSLET_STOP_MASK == (compat.SYSLET_STOP_ON_NONZERO | compat.SYSLET_STOP_ON_ZERO
                                       | compat.SYSLET_STOP_ON_NEGATIVE
                                       | compat.SYSLET_STOP_ON_NON_POSITIVE)
    assert compat.SYSLET_FLAGS_ALL == 0xFF


@pytest.mark.parametrize("name,value", sorted(SYSCALL_NUMBERS.items()))
def test_syslet_call_numbers(name, value):
    assert getattr(compat, name) == value
    assert compat.NR[name[len("__NR_"):]] == value


@pytest.mark.parametrize("name,nr", [
    ("read", 0), ("write", 1), ("open", 2), ("close", 3), ("fstat", 5), ("lseek", 8),
    ("rt_sigreturn", 15), ("pread64", 17), ("pwrite64", 18), ("readv", 19), ("writev", 20),
    ("getpid", 39), ("clone", 56), ("fork", 57), ("vfork", 58), ("execve", 59), ("exit", 60),
    ("fsync", 74), ("fdatasync", 75), ("gettid", 186), ("exit_group", 231), ("openat", 257),
    ("execveat", 322), ("clone3", 435),
])
def test_x86_64_syscall_numbers(name, nr):
    assert compat.NR[name] == nr


def test_layout_against_the_c_dropin_header(tmp_path):
    """If compat/include/syslet.h exists, its structures and constants agree."""
    if not os.path.exists(HEADER):
        pytest.skip("compat/include/syslet.h not written yet")
    checks = "\n".join(
        f'    printf("const {n} %lu 0\\n", (unsigned long)({n}));'
        for n in list(FLAGS) + list(SYSCALL_NUMBERS))
    try:
        fields, sizes = compile_and_run(
            tmp_path, PRINTER % {"decls": '#include "syslet.h"', "extra": checks},
            include_dirs=[os.path.dirname(HEADER)])
    except subprocess.CalledProcessError as e:
        pytest.fail(f"syslet.h does not compile with the spec names: {e.stderr[-2000:]!r}")
    assert sizes[("sizeof", "syslet_uatom")] == 88
    assert sizes[("sizeof", "async_head_user")] == 24
    for f, v in EXPECTED_UATOM.items():
        assert fields[("syslet_uatom", f)] == v, f
    for f, v in EXPECTED_AHU.items():
        assert fields[("async_head_user", f)] == v, f
    for n, v in list(FLAGS.items()) + list(SYSCALL_NUMBERS.items()):
        assert fields[("const", n)][0] == v, n

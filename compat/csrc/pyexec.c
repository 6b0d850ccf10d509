/* compat._exec: the syslet exec entry as a CPython builtin.
 *
 * async_exec() is the call a syslet program makes most, often for one read
 * atom that the engine settles in about a microsecond.  Through cffi each
 * call also pays a Python frame (the wrapper that turns -errno into
 * OSError), argument conversion, errno save/restore and a GIL release and
 * re-acquire around a call that never blocks.  A METH_O builtin does the
 * same work with none of that: it calls sl_exec_unlocking() holding the GIL,
 * and the engine lets the GIL go (through struct sl_unlock) only before
 * something that may block.
 *
 * A Binding is one context as seen from Python: the engine's entry point,
 * the raw context pointer, and the cffi object that owns the context (the
 * context is freed when that object goes; a call that lets the GIL go holds
 * a reference to it until it is back, exactly as a cffi call holds its
 * argument).  detach() forgets the context: later calls go to the fallback
 * callable, or raise OSError(EBADF). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine.h"
#include "retless.h"

typedef struct {
    PyObject_HEAD
    sl_exec_unlocking_fn fn;
    struct sl_ctx *ctx;         /* NULL: detached */
    PyObject *owner;            /* keeps ctx alive; NULL when detached */
    PyObject *fallback;         /* called with the address when detached, or NULL */
} Binding;

static PyTypeObject BindingType;

struct gil_gap {
    PyThreadState *ts;
    PyObject *owner;
};

static void gap_leave(void *arg)
{
    struct gil_gap *g = arg;
    Py_INCREF(g->owner);        /* close() in another thread must not free it */
    g->ts = PyEval_SaveThread();
}

static void gap_enter(void *arg)
{
    struct gil_gap *g = arg;
    PyEval_RestoreThread(g->ts);
    Py_DECREF(g->owner);        /* may free the context: it is no longer used */
}

static PyObject *raise_errno(int e)
{
    PyObject *args = Py_BuildValue("(iss)", e, strerror(e), "async_exec");
    if (args) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* An engine result as the builtin returns it. */
static PyObject *result_obj(int64_t r)
{
    if (r < 0)
        return raise_errno((int)-r);
    return PyLong_FromUnsignedLongLong((unsigned long long)r);
}

static PyObject *exec_call(PyObject *self_, PyObject *arg)
{
    Binding *b = (Binding *)self_;
    unsigned long long atom;
    if (PyLong_CheckExact(arg)) {
        atom = PyLong_AsUnsignedLongLong(arg);
    } else {
        PyObject *i = PyNumber_Index(arg);
        if (!i)
            return NULL;
        atom = PyLong_AsUnsignedLongLong(i);
        Py_DECREF(i);
    }
    if (atom == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (!b->ctx) {
        if (b->fallback)
            return PyObject_CallOneArg(b->fallback, arg);
        return raise_errno(EBADF);
    }
    struct gil_gap g = {NULL, b->owner};
    struct sl_unlock u = {gap_leave, gap_enter, &g};
    return result_obj(b->fn(b->ctx, (uint64_t)atom, &u));
}

#if defined(__x86_64__)
/* ---- x86_64: the entry that returns without `ret` (decisions D22) ----------
 *
 * os.pread pays the first-ret-after-a-syscall penalty (retless.h) inside
 * libc's pread; the builtin's entry does not: SL_RETLESS_ENTRY runs the fast
 * path's two C halves (the engine's sl_exec_fast_begin and
 * sl_exec_fast_end_unlocking, whose addresses compat._core hands over with
 * set_fast_path) around the one preadv2 and returns to CPython with pop +
 * jmp.  The GIL is held from the argument's conversion to the result object,
 * so close() cannot detach the context in between.  Anything else -- not an
 * exact int, no context, not a lone read, a shadow stack -- goes to
 * exec_call, which returns normally. */

static sl_exec_fast_begin_fn g_fast_begin;
static sl_exec_fast_end_unlocking_fn g_fast_end;

int pyexec_fast_begin(PyObject *self_, PyObject *arg, struct sl_fast *f);
PyObject *pyexec_fast_end(PyObject *self_, const struct sl_fast *f, int64_t r);
PyObject *pyexec_call(PyObject *self_, PyObject *arg);
PyObject *pyexec_entry(PyObject *self_, PyObject *arg);

__attribute__((visibility("hidden"))) int pyexec_fast_begin(PyObject *self_, PyObject *arg,
                                                            struct sl_fast *f)
{
    Binding *b = (Binding *)self_;
    if (!g_fast_begin || !b->ctx || !PyLong_CheckExact(arg))
        return 0;
    unsigned long long atom = PyLong_AsUnsignedLongLong(arg);
    if (atom == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();          /* exec_call converts it again and raises */
        return 0;
    }
    return g_fast_begin(b->ctx, (uint64_t)atom, f);
}

__attribute__((visibility("hidden"))) PyObject *pyexec_fast_end(PyObject *self_,
                                                                const struct sl_fast *f, int64_t r)
{
    Binding *b = (Binding *)self_;
    struct gil_gap g = {NULL, b->owner};
    struct sl_unlock u = {gap_leave, gap_enter, &g};
    return result_obj(g_fast_end(f, r, &u));
}

__attribute__((visibility("hidden"))) PyObject *pyexec_call(PyObject *self_, PyObject *arg)
{
    return exec_call(self_, arg);
}

SL_RETLESS_ENTRY(pyexec_entry, pyexec_fast_begin, pyexec_fast_end, pyexec_call);
#define EXEC_ENTRY pyexec_entry
#else
#define EXEC_ENTRY exec_call
#endif

static PyObject *set_fast_path(PyObject *mod, PyObject *args)
{
    (void)mod;
    unsigned long long begin, end;
    if (!PyArg_ParseTuple(args, "KK:set_fast_path", &begin, &end))
        return NULL;
    if (!begin != !end) {
        PyErr_SetString(PyExc_ValueError, "set_fast_path needs both halves, or neither");
        return NULL;
    }
#if defined(__x86_64__)
    g_fast_begin = (sl_exec_fast_begin_fn)(uintptr_t)begin;
    g_fast_end = (sl_exec_fast_end_unlocking_fn)(uintptr_t)end;
#endif
    Py_RETURN_NONE;
}

static PyMethodDef exec_def = {
    "async_exec", EXEC_ENTRY, METH_O,
    "async_exec(atom_addr, /)\n--\n\n"
    "Runs the syslet whose first atom is at ``atom_addr``.  Returns the final\n"
    "atom's address if it completed synchronously, 0 if it went async (its\n"
    "final atom will appear in the ring).  Raises OSError: EINVAL (no head\n"
    "registered, ASYNC and SYNC together, unknown flag bits), EFAULT\n"
    "(unreadable first atom), EBADF (closed context), ECHILD (a context\n"
    "of the parent process after fork)."};

static int binding_init(Binding *b, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fn_addr", "fallback", NULL};
    unsigned long long fn;
    PyObject *fallback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "K|O", names, &fn, &fallback))
        return -1;
    if (!fn) {
        PyErr_SetString(PyExc_ValueError, "fn_addr must be sl_exec_unlocking's address");
        return -1;
    }
    if (fallback != Py_None && !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable or None");
        return -1;
    }
    PyObject *fb = fallback == Py_None ? NULL : fallback;
    b->fn = (sl_exec_unlocking_fn)(uintptr_t)fn;
    Py_XINCREF(fb);
    Py_XSETREF(b->fallback, fb);
    return 0;
}

static PyObject *binding_attach(Binding *b, PyObject *args)
{
    unsigned long long ctx;
    PyObject *owner;
    if (!PyArg_ParseTuple(args, "KO:attach", &ctx, &owner))
        return NULL;
    if (!ctx) {
        PyErr_SetString(PyExc_ValueError, "attach needs a context (not NULL)");
        return NULL;
    }
    b->ctx = (struct sl_ctx *)(uintptr_t)ctx;
    Py_INCREF(owner);
    Py_XSETREF(b->owner, owner);
    Py_RETURN_NONE;
}

static PyObject *binding_detach(Binding *b, PyObject *unused)
{
    (void)unused;
    b->ctx = NULL;
    Py_CLEAR(b->owner);     /* last: its destructor may run Python code */
    Py_RETURN_NONE;
}

static PyObject *binding_function(Binding *b, PyObject *unused)
{
    (void)unused;
    return PyCFunction_New(&exec_def, (PyObject *)b);
}

static PyObject *binding_attached(Binding *b, void *unused)
{
    (void)unused;
    return PyBool_FromLong(b->ctx != NULL);
}

static int binding_traverse(Binding *b, visitproc visit, void *arg)
{
    Py_VISIT(b->owner);
    Py_VISIT(b->fallback);
    return 0;
}

static int binding_clear(Binding *b)
{
    b->ctx = NULL;
    Py_CLEAR(b->owner);
    Py_CLEAR(b->fallback);
    return 0;
}

static void binding_dealloc(Binding *b)
{
    PyObject_GC_UnTrack(b);
    binding_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef binding_methods[] = {
    {"attach", (PyCFunction)binding_attach, METH_VARARGS,
     "attach(ctx_addr, owner): calls now run on this context; owner keeps it alive."},
    {"detach", (PyCFunction)binding_detach, METH_NOARGS,
     "detach(): forget the context (calls go to the fallback or raise EBADF)."},
    {"function", (PyCFunction)binding_function, METH_NOARGS,
     "function(): a new builtin async_exec(atom_addr) bound to this binding."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef binding_getset[] = {
    {"attached", (getter)binding_attached, NULL, "True while a context is attached.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject BindingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "compat._exec.Binding",
    .tp_basicsize = sizeof(Binding),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Binding(fn_addr, fallback=None): one engine context as seen by the\n"
              "builtin async_exec functions made by function().",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)binding_init,
    .tp_dealloc = (destructor)binding_dealloc,
    .tp_traverse = (traverseproc)binding_traverse,
    .tp_clear = (inquiry)binding_clear,
    .tp_methods = binding_methods,
    .tp_getset = binding_getset,
};

static PyMethodDef module_methods[] = {
    {"set_fast_path", set_fast_path, METH_VARARGS,
     "set_fast_path(begin_addr, end_addr): the engine's sl_exec_fast_begin and\n"
     "sl_exec_fast_end_unlocking, for the x86_64 entry (0, 0: none)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef exec_module = {
    PyModuleDef_HEAD_INIT, "compat._exec",
    "The syslet exec entry as a CPython builtin (see compat/csrc/pyexec.c).", -1,
    module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__exec(void)
{
    if (PyType_Ready(&BindingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&exec_module);
    if (!m)
        return NULL;
    Py_INCREF(&BindingType);
    if (PyModule_AddObject(m, "Binding", (PyObject *)&BindingType) < 0) {
        Py_DECREF(&BindingType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/*
 * trellis._zerocopy: a numpy memory handler (NEP 49, numpy >= 1.22) that places large
 * array buffers in a Trellis daemon's shared-memory arena, so that a later `put` only
 * seals them in place (trellis.accel, zero-copy put).
 *
 * The C side decides nothing about the daemon: an allocation of at least `threshold`
 * bytes asks the Python callable `reserve(size)` for an address (0: not now) and falls
 * back to malloc; a free of an address inside a mapped arena range calls `release(addr)`.
 * The arena mappings are made and owned here (never unmapped while arrays may live in
 * them). After a fork the child's inherited ranges become foreign: freeing an inherited
 * array in the child is a no-op (the parent's blobs are the parent's), and the child
 * reserves through its own connection once the Python side says so.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define NPY_TARGET_VERSION NPY_1_22_API_VERSION /* PyDataMem_SetHandler */
#include <numpy/arrayobject.h>

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_RANGES 16

typedef struct {
    uintptr_t base;
    size_t size;
    int foreign; /* inherited across fork: frees are no-ops */
} range_t;

static range_t g_ranges[MAX_RANGES];
static int g_nranges = 0;
static size_t g_threshold = (size_t)1 << 20;
static int g_enabled = 0;
static pid_t g_pid = 0;
static PyObject *g_reserve = NULL; /* reserve(size) -> address or 0 */
static PyObject *g_release = NULL; /* release(address) -> None */
static PyObject *g_sizeof = NULL;  /* sizeof(address) -> size of the reservation */
static PyObject *g_previous = NULL; /* the handler before ours */
static unsigned long long g_reserved = 0, g_fallbacks = 0, g_released = 0, g_ignored = 0;

static const range_t *find_range(const void *p) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < g_nranges; i++) {
        if (a >= g_ranges[i].base && a < g_ranges[i].base + g_ranges[i].size) return &g_ranges[i];
    }
    return NULL;
}

/* Calls f(arg) with the GIL, keeping any exception already set (numpy may allocate
 * while one is pending); returns the result as an unsigned integer, 0 on any error. */
static uintptr_t call_for_address(PyObject *f, uintptr_t arg) {
    if (f == NULL || Py_IsInitialized() == 0) return 0;
    PyGILState_STATE st = PyGILState_Ensure();
    uintptr_t out = 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallFunction(f, "K", (unsigned long long)arg);
    if (r != NULL) {
        if (r != Py_None) out = (uintptr_t)PyLong_AsUnsignedLongLong(r);
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(f);
        out = 0;
    }
    PyErr_Restore(type, value, tb);
    PyGILState_Release(st);
    return out;
}

static void *zc_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (g_enabled && size >= g_threshold && getpid() == g_pid) {
        void *p = (void *)call_for_address(g_reserve, (uintptr_t)size);
        if (p != NULL) {
            const range_t *r = find_range(p);
            if (r != NULL && !r->foreign && (uintptr_t)p + size <= r->base + r->size) {
                g_reserved++;
                return p;
            }
            /* an address outside our mappings would be freed with free(): refuse it */
            call_for_address(g_release, (uintptr_t)p);
        }
        g_fallbacks++;
    }
    return malloc(size);
}

static void *zc_calloc(void *ctx, size_t nelem, size_t elsize) {
    if (elsize != 0 && nelem > SIZE_MAX / elsize) return NULL;
    size_t size = nelem * elsize;
    if (g_enabled && size >= g_threshold && getpid() == g_pid) {
        void *p = zc_malloc(ctx, size);
        if (p != NULL && find_range(p) != NULL) memset(p, 0, size);
        return p;
    }
    return calloc(nelem, elsize);
}

static void zc_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size;
    if (ptr == NULL) return;
    const range_t *r = find_range(ptr);
    if (r == NULL) {
        free(ptr);
        return;
    }
    if (r->foreign || getpid() != g_pid) {
        g_ignored++;
        return;
    }
    g_released++;
    call_for_address(g_release, (uintptr_t)ptr);
}

static void *zc_realloc(void *ctx, void *ptr, size_t new_size) {
    const range_t *r = ptr ? find_range(ptr) : NULL;
    if (r == NULL) return realloc(ptr, new_size);
    size_t old = (size_t)call_for_address(g_sizeof, (uintptr_t)ptr);
    void *p = zc_malloc(ctx, new_size);
    if (p == NULL) return NULL;
    memcpy(p, ptr, old < new_size ? old : new_size);
    zc_free(ctx, ptr, old);
    return p;
}

static PyDataMem_Handler zc_handler = {
    "trellis_zero_copy",
    1,
    {NULL, zc_malloc, zc_calloc, zc_realloc, zc_free},
};

/* -- the module's functions ------------------------------------------------------------ */

static PyObject *py_install(PyObject *self, PyObject *args) {
    PyObject *reserve, *release, *size_of;
    unsigned long long threshold;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOK", &reserve, &release, &size_of, &threshold)) return NULL;
    if (!PyCallable_Check(reserve) || !PyCallable_Check(release) || !PyCallable_Check(size_of)) {
        PyErr_SetString(PyExc_TypeError, "reserve, release and sizeof must be callable");
        return NULL;
    }
    Py_XSETREF(g_reserve, Py_NewRef(reserve));
    Py_XSETREF(g_release, Py_NewRef(release));
    Py_XSETREF(g_sizeof, Py_NewRef(size_of));
    g_threshold = threshold > 0 ? (size_t)threshold : 1;
    g_pid = getpid();
    if (g_previous == NULL) {
        PyObject *capsule = PyCapsule_New(&zc_handler, "mem_handler", NULL);
        if (capsule == NULL) return NULL;
        PyObject *old = PyDataMem_SetHandler(capsule);
        Py_DECREF(capsule);
        if (old == NULL) return NULL;
        g_previous = old;
    }
    g_enabled = 1;
    Py_RETURN_NONE;
}

/* Stops placing new arrays in the arena and puts numpy's previous handler back; arrays
 * already there keep our handler (numpy records it per array) and free through it. */
static PyObject *py_uninstall(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    g_enabled = 0;
    if (g_previous != NULL) {
        PyObject *ours = PyDataMem_SetHandler(g_previous);
        Py_XDECREF(ours);
        Py_CLEAR(g_previous);
    }
    Py_RETURN_NONE;
}

static PyObject *py_map(PyObject *self, PyObject *args) {
    int fd;
    unsigned long long size;
    (void)self;
    if (!PyArg_ParseTuple(args, "iK", &fd, &size)) return NULL;
    if (g_nranges == MAX_RANGES) {
        PyErr_SetString(PyExc_RuntimeError, "too many arena mappings");
        return NULL;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return PyErr_SetFromErrno(PyExc_OSError);
    g_ranges[g_nranges].base = (uintptr_t)p;
    g_ranges[g_nranges].size = (size_t)size;
    g_ranges[g_nranges].foreign = 0;
    g_nranges++;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)p);
}

/* In a forked child: what the parent mapped is the parent's. */
static PyObject *py_forked(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    for (int i = 0; i < g_nranges; i++) g_ranges[i].foreign = 1;
    g_pid = getpid();
    Py_RETURN_NONE;
}

static PyObject *py_owned(PyObject *self, PyObject *args) {
    unsigned long long addr;
    (void)self;
    if (!PyArg_ParseTuple(args, "K", &addr)) return NULL;
    const range_t *r = find_range((void *)(uintptr_t)addr);
    return PyBool_FromLong(r != NULL && !r->foreign);
}

static PyObject *py_stats(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("{sKsKsKsKsisKsi}", "reserved", g_reserved, "fallbacks", g_fallbacks, "released",
                         g_released, "ignored", g_ignored, "mappings", g_nranges,
                         "threshold", (unsigned long long)g_threshold, "enabled", g_enabled);
}

static PyMethodDef methods[] = {
    {"install", py_install, METH_VARARGS, "install(reserve, release, sizeof, threshold): place large arrays in the arena"},
    {"uninstall", py_uninstall, METH_NOARGS, "stop placing new arrays in the arena"},
    {"map", py_map, METH_VARARGS, "map(fd, size) -> address: map an arena (kept for the process's life)"},
    {"forked", py_forked, METH_NOARGS, "in a forked child: the inherited mappings are the parent's"},
    {"owned", py_owned, METH_VARARGS, "owned(address) -> whether it lies in one of this process's mappings"},
    {"stats", py_stats, METH_NOARGS, "counters"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_zerocopy", NULL, -1, methods};

PyMODINIT_FUNC PyInit__zerocopy(void) {
    import_array();
    return PyModule_Create(&module);
}

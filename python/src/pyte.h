/* pyte.h - shared declarations of the mooncake.engine extension: the
 * reference-counted per-engine state (pyte_core) that outlives the Python
 * object while CUDA callbacks still use it, and the argument helpers. */
#ifndef PYTE_H
#define PYTE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "te/te.h"

/* PyType_GetModuleByDef (module state reached from a method) arrived in 3.11. */
#if PY_VERSION_HEX < 0x030B0000
#error "mooncake.engine needs Python 3.11 or newer"
#endif

/* GIL-free from here on: everything below pyte_core_* may be called without
 * the GIL (CUDA host callbacks do). */

typedef struct pyte_segcache pyte_segcache;
typedef struct pyte_ranges pyte_ranges;
typedef struct pyte_managed pyte_managed;

typedef struct pyte_core {
    atomic_int refs;
    te_engine *engine;
    pyte_segcache *segs;   /* target name -> segment id */
    pyte_ranges *ranges;   /* local ranges registered through this object */
    pyte_managed *managed; /* allocate_managed_buffer's size classes */
    /* Failures of transfers run by CUDA host callbacks, until read. */
    pthread_mutex_t cuda_lock;
    char **cuda_errors;
    size_t cuda_error_count;  /* messages kept (at most PYTE_MAX_CUDA_ERRORS) */
    size_t cuda_error_total;  /* failures since the last read */
} pyte_core;

#define PYTE_MAX_CUDA_ERRORS 64

/* core.c */
pyte_core *pyte_core_new(void); /* NULL when out of memory */
void pyte_core_ref(pyte_core *c);
void pyte_core_unref(pyte_core *c); /* the last one destroys the engine */
void pyte_core_cuda_failed(pyte_core *c, const char *msg);

/* Registers / unregisters through the engine and keeps the module's range
 * table in step; return the te status. */
int pyte_register(pyte_core *c, uint64_t addr, uint64_t len, const char *location);
int pyte_unregister(pyte_core *c, uint64_t addr);
int pyte_register_batch(pyte_core *c, const uint64_t *addrs, const uint64_t *lens, size_t n,
                        const char *location);
int pyte_unregister_batch(pyte_core *c, const uint64_t *addrs, size_t n);

/* segcache.c: resolves a target name through the cache; forget drops it so
 * that the next use re-opens (after a failure). */
pyte_segcache *pyte_segcache_new(void);
void pyte_segcache_free(pyte_segcache *s);
int pyte_segment(pyte_core *c, const char *name, te_segment_id *id);
/* -1 with ValueError set when transport_hint names no transport (transfer_methods.c). */
int pyte_check_hint(pyte_core *c, const char *hint);
void pyte_segment_forget(pyte_core *c, const char *name);

/* ranges.c: sorted, non-overlapping [addr, addr+len) ranges. */
pyte_ranges *pyte_ranges_new(void);
void pyte_ranges_free(pyte_ranges *r);
int pyte_ranges_add(pyte_ranges *r, uint64_t addr, uint64_t len);
void pyte_ranges_remove(pyte_ranges *r, uint64_t addr);
int pyte_ranges_contains(pyte_ranges *r, uint64_t addr, uint64_t len);

/* managed.c */
pyte_managed *pyte_managed_new(void);
void pyte_managed_free_all(pyte_managed *m); /* after the engine is gone */
uint64_t pyte_managed_alloc(pyte_core *c, uint64_t length);  /* 0 on failure */
int pyte_managed_release(pyte_core *c, uint64_t addr, uint64_t length);

/* ---- Python side (GIL held) ------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pyte_core *core;
} pyte_engine_object;

/* The module's state (one per module object: multi-phase init, so each
 * import in a subinterpreter has its own types). */
typedef struct pyte_state {
    PyTypeObject *engine_type;
    PyTypeObject *inner_type;
    PyTypeObject *notify_type;
} pyte_state;

/* The state of the module that defined tp (or a base of tp); NULL with
 * TypeError when tp is not from this module (module.c). */
pyte_state *pyte_state_of(PyTypeObject *tp);

/* inner.c: InnerTransferEngine; a new one holds a reference to core. */
extern PyType_Spec pyte_inner_spec;
PyObject *pyte_inner_new(pyte_state *st, pyte_core *core);

/* notify.c: TransferNotify.  Its fields as new C strings: 0, or -1 with an
 * exception (TypeError when notify is no TransferNotify of st's module). */
extern PyType_Spec pyte_notify_spec;
int pyte_notify_strings(pyte_state *st, PyObject *notify, char **name, char **msg);
PyObject *pyte_notify_new(pyte_state *st, const char *name, const char *msg);

/* args.c: "O&" converters and sequence helpers.  Integers go through
 * __index__; negative or >= 2**64 raises ValueError. */
int pyte_conv_u64(PyObject *o, void *out);
int pyte_conv_opcode(PyObject *o, void *out);
/* A batch id: like u64, but out-of-range ints become 0 (an unknown id). */
uint64_t pyte_batch_id_from(PyObject *o, int *ok);
/* A sequence of integers into an array to release with PyMem_RawFree
 * (*out NULL when n is 0). */
int pyte_u64_list(PyObject *seq, const char *what, uint64_t **out, size_t *n);

/* TransferEngine's methods.  Each *_methods.h lists its file's methods as
 * X-macro entries KW(name, doc) / NOA(name, doc); expanded with the DECLARE
 * pair they declare pyte_m_<name>, with the DEF pair they are entries of the
 * type's one static method table (module.c).  Nothing is assembled at import. */
#define PYTE_DECLARE_KW(name, doc) \
    PyObject *pyte_m_##name(PyObject *self, PyObject *args, PyObject *kw);
#define PYTE_DECLARE_NOA(name, doc) PyObject *pyte_m_##name(PyObject *self, PyObject *unused);
#define PYTE_DEF_KW(name, doc) \
    {#name, (PyCFunction)(void (*)(void))pyte_m_##name, METH_VARARGS | METH_KEYWORDS, doc},
#define PYTE_DEF_NOA(name, doc) {#name, pyte_m_##name, METH_NOARGS, doc},

int pyte_cuda_available(void); /* cuda.c */

#endif

/*
 * driver.h — the CPython side of braid._braid, shared by the SWIG interface
 * (braid.i) and the step driver (driver.c, included into the SWIG wrapper).
 *
 * Handles: every braid object the Python package holds is a Handle (a small
 * CPython object owning one braid pointer and freeing it when collected).
 * The SWIG wrappers take and return Handles through the typemaps in
 * braid.i, and the driver's natives take them directly.
 */
#ifndef BRAID_PY_DRIVER_H
#define BRAID_PY_DRIVER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "braid.h"

enum { H_LOCK = 1, H_SEMAPHORE, H_EVENT, H_CONDITION, H_LIMITER, H_SENDER, H_RECEIVER, H_GROUP, H_LOOP, H_KINDS };

/* Borrow the pointer of a Handle of `kind`; NULL with TypeError set if `o`
 * is not one (or ValueError if it was already released). */
static void *braid_py_handle(PyObject *o, int kind);
/* A new Handle owning p (freed with the kind's free function). */
static PyObject *braid_py_handle_new(void *p, int kind, PyObject *keep);
/* Raise the Python exception for a BRAID_E* code; returns NULL. */
static PyObject *braid_py_raise(int code);

#endif

/* The tracker's hot path in C: call-site capture, checkout and checkin.
 *
 * Each function does exactly what its pure-Python twin does (CallSiteFinder.capture,
 * Tracker.checkout, Tracker.checkin in _callsite.py and _tracker.py); the Python code stays
 * the reference and the fallback (POOLWATCH_PURE_PYTHON=1, other interpreters, Python 3.10,
 * free-threaded builds). Everything that is not the common case is handed back to Python:
 * a call site seen for the first time, a short stack (depth > 0), a finder whose frame
 * source was replaced for a test, garbage-collector work to apply.
 *
 * Only a frame's code object (its file name) and instruction offset are read, never a local
 * variable (see cursor_t for how frames are walked).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && !defined(Py_GIL_DISABLED) && !defined(PYPY_VERSION)
#define POOLWATCH_SPEEDUPS 1
#else
#define POOLWATCH_SPEEDUPS 0
#endif

#if POOLWATCH_SPEEDUPS
#include <pythread.h>
#include <structmember.h> /* T_OBJECT_EX, READONLY: what a __slots__ member is */

#if PY_VERSION_HEX < 0x030C0000 /* 3.11: the interpreter's frame records (see cursor_t) */
#define POOLWATCH_INTERNAL_FRAMES 1
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#else
#define POOLWATCH_INTERNAL_FRAMES 0
#endif

/* Set once by configure(), from _callsite.py and _tracker.py. */
static PyObject *TASK_PAIR;      /* what capture returns at the asyncio event loop */
static PyObject *UNKNOWN_PAIR;   /* what capture returns when the stack runs out */
static PyObject *LEASE_RECORD;   /* the LeaseRecord type */
static PyObject *THREADS;        /* threading._active: ident -> Thread */
static PyObject *CURRENT_THREAD; /* threading.current_thread */
static PyObject *TASK_NAME;      /* _tracker._task_name(loop) */
static PyObject *ORPHAN_NOTE;    /* note of a lease whose connection was leased again */
static long KIND_USER = 0, KIND_LOOP = 2;

static PyObject *S_skip, *S_interned, *S_kind, *S_intern, *S_drain, *S_callsites,
    *S_stack_depth, *S_asyncio_events, *S_get_running_loop, *S_asyncio_tasks, *S_current_tasks,
    *S_get_name, *S_clock, *S_end, *S_returned, *S_orphaned, *S_capture, *S_capture_python,
    *ZERO;

/* Index of the state, response and owner_ref fields in a LeaseRecord (see _tracker.py). */
#define F_STATE 8
#define F_RESPONSE 9
#define F_OWNER_REF 11
#define N_FIELDS 12

/* A cursor over the calling Python frames.
 *
 * On CPython 3.11 it walks the interpreter's own frame records (what sys._getframe walks):
 * no frame object is built for a frame that is only looked at, which the public API
 * (PyFrame_GetBack) does for every frame, at the cost of an allocation and a deallocation
 * each. Other versions use the public API. Either way a frame object is built only for the
 * frame whose call site is seen for the first time (finder._intern reads its line). */
#if POOLWATCH_INTERNAL_FRAMES
typedef _PyInterpreterFrame *cursor_t;

static cursor_t
complete(cursor_t frame)
{
    while (frame != NULL && _PyFrame_IsIncomplete(frame))
        frame = frame->previous;
    return frame;
}

/* The frame `n` calls out from the current Python frame, or NULL. */
static cursor_t
cursor_out(Py_ssize_t n)
{
    cursor_t frame = complete(PyThreadState_GET()->cframe->current_frame);
    while (frame != NULL && n-- > 0)
        frame = complete(frame->previous);
    return frame;
}

#define cursor_back(frame) complete((frame)->previous)
#define cursor_code(frame) ((frame)->f_code)
#define cursor_lasti(frame) (_PyInterpreterFrame_LASTI(frame) * (int)sizeof(_Py_CODEUNIT))
#define cursor_release(frame) ((void)0)
#else
typedef PyFrameObject *cursor_t; /* a strong reference */

static cursor_t
cursor_out(Py_ssize_t n)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(frame);
    while (frame != NULL && n-- > 0) {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    return frame;
}

static cursor_t
cursor_back_public(cursor_t frame)
{
    PyFrameObject *back = PyFrame_GetBack(frame);
    Py_DECREF(frame);
    return back;
}

/* A borrowed code object: the frame holds it. */
static PyCodeObject *
cursor_code_public(cursor_t frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    Py_DECREF(code);
    return code;
}

#define cursor_back(frame) cursor_back_public(frame)
#define cursor_code(frame) cursor_code_public(frame)
#define cursor_lasti(frame) PyFrame_GetLasti(frame)
#define cursor_release(frame) Py_XDECREF(frame)
#endif

/* The frame object `n` calls out from the current Python frame (sys._getframe(n) as seen
 * from the caller of the C function): built only when a call site is seen the first time. */
static PyObject *
frame_object(Py_ssize_t n)
{
    PyObject *getframe = PySys_GetObject("_getframe"); /* borrowed */
    if (getframe == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "poolwatch: sys._getframe is missing");
        return NULL;
    }
    PyObject *depth = PyLong_FromSsize_t(n);
    if (depth == NULL)
        return NULL;
    PyObject *frame = PyObject_CallOneArg(getframe, depth);
    Py_DECREF(depth);
    return frame;
}

/* The kind of a frame's file, from the finder's cache (asking finder._kind on a miss). */
static long
kind_of(PyObject *finder, PyObject *filename)
{
    PyObject *kinds = PyObject_GetAttr(finder, S_skip);
    if (kinds == NULL)
        return -1;
    if (!PyDict_CheckExact(kinds)) {
        Py_DECREF(kinds);
        PyErr_SetString(PyExc_TypeError, "poolwatch: CallSiteFinder._skip is not a dict");
        return -1;
    }
    long value = -1;
    PyObject *kind = PyDict_GetItemWithError(kinds, filename); /* borrowed */
    if (kind != NULL) {
        value = PyLong_AsLong(kind);
    }
    else if (!PyErr_Occurred()) {
        kind = PyObject_CallMethodOneArg(finder, S_kind, filename);
        if (kind != NULL) {
            value = PyDict_SetItem(kinds, filename, kind) < 0 ? -1 : PyLong_AsLong(kind);
            Py_DECREF(kind);
        }
    }
    Py_DECREF(kinds);
    return value;
}

/* Two direct-mapped caches in front of the finder's dicts (which stay the truth): the kind of a
 * code object's file, and the interned call site of a (code object, instruction). A lookup is a
 * few compares where the dicts cost a string hash probe per frame and a tuple key per site.
 * Entries hold strong references to the finder and the code object, so neither address can be
 * reused by another object while an entry names it. forget() empties both: the finder calls it
 * when it clears its kinds (add_library_modules). Only ever touched with the GIL held. */
#define CACHE_SIZE 1024
typedef struct {
    PyObject *finder, *code;
    long kind;
} kind_entry;
typedef struct {
    PyObject *finder, *code, *pair;
    int lasti;
} site_entry;
static kind_entry KINDS[CACHE_SIZE];
static site_entry SITES[CACHE_SIZE];
/* How many times forget() ran: a kind worked out across one (finder._kind runs Python, so
 * another thread may declare library modules meanwhile) may be stale and is not kept. */
static unsigned long FORGOTTEN;

static size_t
slot(PyObject *finder, PyCodeObject *code, int lasti)
{
    size_t h = ((uintptr_t)code >> 4) ^ ((uintptr_t)finder >> 6) ^ ((size_t)lasti * 0x9E3779B1u);
    return (h ^ (h >> 10)) & (CACHE_SIZE - 1);
}

/* Fill an entry completely before releasing what it held: releasing a code object may run a
 * weak reference callback, which may capture again. */
static long
kind_cached(PyObject *finder, PyCodeObject *code)
{
    kind_entry *entry = &KINDS[slot(finder, code, 0)];
    if (entry->finder == finder && entry->code == (PyObject *)code)
        return entry->kind;
    unsigned long forgotten = FORGOTTEN;
    long kind = kind_of(finder, code->co_filename);
    if (kind == -1 && PyErr_Occurred())
        return -1;
    if (forgotten != FORGOTTEN)
        return kind; /* good for this capture only */
    PyObject *old_finder = entry->finder, *old_code = entry->code;
    entry->finder = Py_NewRef(finder);
    entry->code = Py_NewRef((PyObject *)code);
    entry->kind = kind;
    Py_XDECREF(old_finder);
    Py_XDECREF(old_code);
    return kind;
}

static void
remember_site(site_entry *entry, PyObject *finder, PyCodeObject *code, int lasti, PyObject *pair)
{
    PyObject *old_finder = entry->finder, *old_code = entry->code, *old_pair = entry->pair;
    entry->finder = Py_NewRef(finder);
    entry->code = Py_NewRef((PyObject *)code);
    entry->pair = Py_NewRef(pair);
    entry->lasti = lasti;
    Py_XDECREF(old_finder);
    Py_XDECREF(old_code);
    Py_XDECREF(old_pair);
}

static PyObject *
sp_forget(PyObject *module, PyObject *unused)
{
    FORGOTTEN++;
    for (size_t i = 0; i < CACHE_SIZE; i++) {
        kind_entry kind = KINDS[i];
        site_entry site = SITES[i];
        KINDS[i] = (kind_entry){NULL, NULL, 0};
        SITES[i] = (site_entry){NULL, NULL, NULL, 0};
        Py_XDECREF(kind.finder);
        Py_XDECREF(kind.code);
        Py_XDECREF(site.finder);
        Py_XDECREF(site.code);
        Py_XDECREF(site.pair);
    }
    Py_RETURN_NONE;
}

/* The interned (site, stack) pair of a call point already seen: from the cache, else
 * finder._interned[(id(code), lasti)][0]. NULL when it is not there yet (*seen = 0) or on an
 * error (with an exception). */
static PyObject *
site_seen(PyObject *finder, PyCodeObject *code, int lasti)
{
    site_entry *entry = &SITES[slot(finder, code, lasti)];
    if (entry->finder == finder && entry->code == (PyObject *)code && entry->lasti == lasti)
        return Py_NewRef(entry->pair);
    PyObject *interned = PyObject_GetAttr(finder, S_interned);
    if (interned == NULL)
        return NULL;
    PyObject *address = PyLong_FromVoidPtr(code);
    PyObject *offset = PyLong_FromLong(lasti);
    PyObject *key = (address && offset) ? PyTuple_Pack(2, address, offset) : NULL;
    Py_XDECREF(address);
    Py_XDECREF(offset);
    PyObject *hit = key ? PyDict_GetItemWithError(interned, key) : NULL; /* borrowed */
    Py_XDECREF(key);
    PyObject *result = NULL;
    if (hit != NULL && PyTuple_CheckExact(hit) && PyTuple_GET_SIZE(hit) == 2) {
        result = Py_NewRef(PyTuple_GET_ITEM(hit, 0));
        remember_site(entry, finder, code, lasti, result); /* only what the dict holds */
    }
    Py_DECREF(interned);
    return result;
}

/* The interned (site, stack) pair of a call point: site_seen(), or, the first time,
 * finder._intern(frame object). NULL with an exception on failure. */
static PyObject *
site_of_frame(PyObject *finder, PyCodeObject *code, int lasti, Py_ssize_t depth, PyObject *frame)
{
    PyObject *result = site_seen(finder, code, lasti);
    if (result != NULL || PyErr_Occurred())
        return result;
    /* first time at this call point: Python computes and interns the site */
    PyObject *object = frame != NULL ? Py_NewRef(frame) : frame_object(depth);
    result = object ? PyObject_CallMethodOneArg(finder, S_intern, object) : NULL;
    Py_XDECREF(object);
    return result;
}

static PyObject *
site_of(PyObject *finder, PyCodeObject *code, int lasti, Py_ssize_t depth)
{
    return site_of_frame(finder, code, lasti, depth, NULL);
}

/* CallSiteFinder.capture(0, skip, trusted) measured from the current Python frame, the caller
 * of the C function that calls this. Returns a new reference, or NULL with an exception. */
static PyObject *
capture_from(PyObject *finder, Py_ssize_t skip, Py_ssize_t trusted)
{
    PyObject *result = NULL;
    cursor_t frame = NULL;
    Py_ssize_t depth;
    for (;;) {
        int first = 1;
        depth = skip + trusted;
        frame = cursor_out(depth);
        if (frame == NULL && trusted) { /* the stack is shallower than the caller said */
            trusted = 0;
            depth = skip;
            frame = cursor_out(depth);
        }
        while (frame != NULL) {
            long kind = kind_cached(finder, cursor_code(frame));
            if (kind == -1 && PyErr_Occurred())
                goto done;
            if (kind == KIND_USER)
                break;
            if (kind == KIND_LOOP) {
                result = Py_NewRef(TASK_PAIR);
                goto done;
            }
            first = 0;
            depth++;
            frame = cursor_back(frame);
        }
        if (frame != NULL && first && trusted) {
            /* User code right past the frames trusted to be the library's: walk them. */
            cursor_release(frame);
            frame = NULL;
            trusted = 0;
            continue;
        }
        break;
    }
    if (frame == NULL)
        result = Py_NewRef(UNKNOWN_PAIR);
    else
        result = site_of(finder, cursor_code(frame), cursor_lasti(frame), depth);
done:
    cursor_release(frame);
    return result;
}

static int
as_ssize(PyObject *value, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* capture(finder, depth, skip, trusted) -> (site, stack): CallSiteFinder.capture.
 * What C does not do here (a short stack, a first sighting) the Python twin, finder._capture,
 * does: called from C, its caller's frame is this function's caller, as its arithmetic wants. */
static PyObject *
sp_capture(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t numbers[3] = {0, 0, 0}; /* depth, skip, trusted */
    if (nargs < 1 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "capture(finder, depth=0, skip=0, trusted=0)");
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        if (as_ssize(args[i], &numbers[i - 1]) < 0)
            return NULL;
    }
    if (numbers[0] == 0)
        return capture_from(args[0], numbers[1], numbers[2]);
    return PyObject_VectorcallMethod(S_capture_python, args, (size_t)nargs, NULL);
}

/* capture_at(finder, frame) -> (site, ()): CallSiteFinder.capture(0) from `frame` outward
 * instead of from the caller: the first user frame, TASK_PAIR at the event loop, UNKNOWN_PAIR
 * when the frames run out. For frames that are not the running thread's own, such as a
 * suspended greenlet's (gr_frame). On 3.11, a frame still running (as a suspended greenlet's
 * are) is walked through the interpreter's frame records, as capture walks this thread's:
 * PyFrame_GetBack builds a frame object for each frame, which measured as most of what
 * finding an asyncio engine's call site cost. The public API walks the rest, and a call site
 * seen for the first time (interning it reads the frame object's line). */
static PyObject *
sp_capture_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyFrame_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "capture_at(finder, frame)");
        return NULL;
    }
    PyObject *finder = args[0], *result = NULL;
#if POOLWATCH_INTERNAL_FRAMES
    PyFrameObject *start = (PyFrameObject *)args[1];
    if (start->f_back == NULL && start->f_frame->owner != FRAME_OWNED_BY_FRAME_OBJECT) {
        cursor_t frame = complete(start->f_frame);
        for (; frame != NULL; frame = cursor_back(frame)) {
            long kind = kind_cached(finder, cursor_code(frame));
            if (kind == -1 && PyErr_Occurred())
                return NULL;
            if (kind == KIND_LOOP)
                return Py_NewRef(TASK_PAIR);
            if (kind == KIND_USER) {
                result = site_seen(finder, cursor_code(frame), cursor_lasti(frame));
                if (result != NULL || PyErr_Occurred())
                    return result;
                break; /* seen first: the walk below interns it from its frame object */
            }
        }
        if (frame == NULL) /* the records ran out where PyFrame_GetBack's would */
            return Py_NewRef(UNKNOWN_PAIR);
    }
#endif
    PyFrameObject *frame = (PyFrameObject *)Py_NewRef(args[1]);
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        long kind = kind_cached(finder, code);
        if (kind == KIND_USER)
            result = site_of_frame(finder, code, PyFrame_GetLasti(frame), 0, (PyObject *)frame);
        else if (kind == KIND_LOOP)
            result = Py_NewRef(TASK_PAIR);
        Py_DECREF(code);
        if (result != NULL || (kind == -1 && PyErr_Occurred()) || kind == KIND_USER)
            break;
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    if (frame == NULL)
        return Py_NewRef(UNKNOWN_PAIR);
    Py_DECREF(frame);
    return result;
}

/* Run tracker._drain() when garbage-collector callbacks left work in `pending`. */
static int
drain_if_pending(PyObject *tracker, PyObject *pending)
{
    Py_ssize_t size = PyObject_Length(pending);
    if (size < 0)
        return -1;
    if (size == 0)
        return 0;
    PyObject *done = PyObject_CallMethodNoArgs(tracker, S_drain);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* PoolRecord's slots, read at their offsets when the object is exactly a PoolRecord (what
 * configure() was given); through getattr otherwise, or when a slot is empty (which raises). */
enum { SLOT_LEASES, SLOT_CHECKOUT_COUNT, SLOT_CHECKIN_COUNT, SLOT_REF, SLOT_SPARE, N_SLOTS };
static PyObject *POOL_RECORD;
static PyObject *SLOT_NAMES[N_SLOTS];
static Py_ssize_t SLOT_OFFSETS[N_SLOTS]; /* 0: unknown, use getattr */

static PyObject *
pool_slot(PyObject *pool, int which)
{
    if ((PyObject *)Py_TYPE(pool) == POOL_RECORD && SLOT_OFFSETS[which]) {
        PyObject *value = *(PyObject **)((char *)pool + SLOT_OFFSETS[which]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(pool, SLOT_NAMES[which]);
}

/* Set a PoolRecord slot (a new reference to value is taken); -1 with an exception on failure. */
static int
pool_slot_set(PyObject *pool, int which, PyObject *value)
{
    if ((PyObject *)Py_TYPE(pool) == POOL_RECORD && SLOT_OFFSETS[which]) {
        PyObject **slot = (PyObject **)((char *)pool + SLOT_OFFSETS[which]);
        PyObject *old = *slot;
        *slot = Py_NewRef(value);
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(pool, SLOT_NAMES[which], value);
}

static int
find_slots(PyObject *type)
{
    for (int i = 0; i < N_SLOTS; i++) {
        SLOT_OFFSETS[i] = 0;
        PyObject *descr = PyObject_GetAttr(type, SLOT_NAMES[i]);
        if (descr == NULL)
            return -1;
        if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            if (member->type == T_OBJECT_EX && !(member->flags & READONLY))
                SLOT_OFFSETS[i] = member->offset;
        }
        Py_DECREF(descr);
    }
    return 0;
}

static int
advance(PyObject *owner, int which, PyObject **value)
{
    PyObject *counter = pool_slot(owner, which);
    if (counter == NULL)
        return -1;
    PyObject *next = PyIter_Next(counter);
    Py_DECREF(counter);
    if (next == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "poolwatch: a counter ran out");
        return -1;
    }
    if (value != NULL)
        *value = next;
    else
        Py_DECREF(next);
    return 0;
}

/* The Thread object of the calling thread, as threading.current_thread() gives it, kept in
 * the thread state's own dict after the first lookup: an int-keyed lookup in
 * threading._active (and the int) saved per checkout. The interpreter drops that dict when
 * the thread ends, so a later thread given the same ident never finds the old Thread. */
static PyObject *S_thread_key;

static PyObject *
current_thread(void)
{
    PyObject *own = PyThreadState_GetDict(); /* borrowed; NULL (no exception) if none */
    if (own != NULL) {
        PyObject *thread = PyDict_GetItemWithError(own, S_thread_key); /* borrowed */
        if (thread != NULL)
            return Py_NewRef(thread);
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ident == NULL)
        return NULL;
    PyObject *thread = PyDict_GetItemWithError(THREADS, ident); /* borrowed */
    Py_DECREF(ident);
    if (thread != NULL)
        Py_INCREF(thread);
    else if (PyErr_Occurred() || (thread = PyObject_CallNoArgs(CURRENT_THREAD)) == NULL)
        return NULL;
    if (own != NULL && PyDict_SetItem(own, S_thread_key, thread) < 0)
        Py_CLEAR(thread);
    return thread;
}

/* The running asyncio task's name, or None. asyncio's _get_running_loop is looked up once
 * asyncio has been imported (until then no task can run); on 3.11, so is the dict in which
 * the C Task records the task running on each loop (what asyncio.current_task reads), which
 * spares two Python calls. Elsewhere _tracker._task_name does it. */
static PyObject *RUNNING_LOOP, *CURRENT_TASKS;

static PyObject *
task_name(void)
{
    if (RUNNING_LOOP == NULL) {
        PyObject *events = PyImport_GetModule(S_asyncio_events);
        if (events == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        RUNNING_LOOP = PyObject_GetAttr(events, S_get_running_loop);
        Py_DECREF(events);
        if (RUNNING_LOOP == NULL)
            return NULL;
#if PY_VERSION_HEX < 0x030C0000
        PyObject *tasks = PyImport_GetModule(S_asyncio_tasks);
        PyObject *current = tasks ? PyObject_GetAttr(tasks, S_current_tasks) : NULL;
        Py_XDECREF(tasks);
        if (current != NULL && PyDict_CheckExact(current))
            CURRENT_TASKS = current;
        else
            Py_XDECREF(current);
        PyErr_Clear(); /* no such dict: _task_name does it */
#endif
    }
    PyObject *loop = PyObject_CallNoArgs(RUNNING_LOOP);
    if (loop == NULL || loop == Py_None)
        return loop;
    if (CURRENT_TASKS == NULL) {
        PyObject *name = PyObject_CallOneArg(TASK_NAME, loop);
        Py_DECREF(loop);
        return name;
    }
    PyObject *task = PyDict_GetItemWithError(CURRENT_TASKS, loop); /* borrowed */
    Py_DECREF(loop);
    if (task == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    return PyObject_CallMethodNoArgs(task, S_get_name);
}

/* checkout(tracker, pending, seq_counter, finder, pool, key, connection=None, site=None)
 * -> LeaseRecord. The tracker binds its pending deque and sequence counter (containers it
 * never replaces) and its CallSiteFinder with functools.partial, saving attribute lookups a
 * call; finder is None when the finder's capture is Python's (a test's frame source) or the
 * tracker records stacks (stack_depth > 0): the call site is then the finder's capture. */
static PyObject *
checkout_impl(PyObject *tracker, PyObject *pending, PyObject *seq, PyObject *finder,
              PyObject *pool, PyObject *key, PyObject *connection, PyObject *site)
{
    Py_INCREF(site);
    PyObject *fields[N_FIELDS] = {NULL};
    PyObject *leases = NULL, *record = NULL;

    if (drain_if_pending(tracker, pending) < 0)
        goto fail;
    if (site == Py_None) {
        Py_DECREF(site);
        if (finder != Py_None) {
            site = capture_from(finder, 0, 0);
        }
        else {
            /* tracker.callsites.capture(tracker.stack_depth, 0): Python's, or the C one with
             * a stack */
            PyObject *depth = PyObject_GetAttr(tracker, S_stack_depth);
            PyObject *own = depth ? PyObject_GetAttr(tracker, S_callsites) : NULL;
            site = own ? PyObject_VectorcallMethod(
                             S_capture, (PyObject *[]){own, depth, ZERO}, 3, NULL)
                       : NULL;
            Py_XDECREF(own);
            Py_XDECREF(depth);
        }
        if (site == NULL)
            goto fail;
    }
    /* The record checked in last in this pool, if nothing but the pool holds it any more:
     * refilled, it spares an allocation and, for a keep-alive connection leased again, its
     * weak reference. Nobody can see the reuse: no one else has the object. */
    record = pool_slot(pool, SLOT_SPARE);
    if (record == NULL)
        goto fail;
    if (record != Py_None && Py_REFCNT(record) == 2 &&
        (PyObject *)Py_TYPE(record) == LEASE_RECORD && PyList_GET_SIZE(record) == N_FIELDS) {
        if (pool_slot_set(pool, SLOT_SPARE, Py_None) < 0)
            goto fail;
    }
    else {
        Py_CLEAR(record);
    }
    fields[0] = Py_NewRef(pool);
    fields[1] = Py_NewRef(key);
    PyObject *kept = record ? PyList_GET_ITEM(record, 2) : NULL;
    if (connection == Py_None) {
        fields[2] = Py_NewRef(Py_None);
    }
    else if (kept != NULL && PyWeakref_CheckRefExact(kept) &&
             PyWeakref_GET_OBJECT(kept) == connection) {
        fields[2] = Py_NewRef(kept);
    }
    else {
        fields[2] = PyWeakref_NewRef(connection, NULL);
        if (fields[2] == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError))
                goto fail;
            PyErr_Clear(); /* not weakly referenceable: no socket identity for this lease */
            fields[2] = Py_NewRef(Py_None);
        }
    }
    fields[6] = task_name();
    if (fields[6] == NULL)
        goto fail;
    fields[3] = PyObject_CallMethodNoArgs(tracker, S_clock);
    if (fields[3] == NULL)
        goto fail;
    fields[4] = Py_NewRef(site);
    fields[5] = current_thread();
    if (fields[5] == NULL)
        goto fail;
    if ((fields[7] = PyIter_Next(seq)) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "poolwatch: the sequence counter ran out");
        goto fail;
    }
    for (int i = 8; i < N_FIELDS; i++)
        fields[i] = Py_NewRef(Py_None);
    if (record != NULL) {
        for (int i = 0; i < N_FIELDS; i++) {
            PyObject *old = PyList_GET_ITEM(record, i);
            PyList_SET_ITEM(record, i, fields[i]);
            fields[i] = NULL;
            Py_DECREF(old);
        }
        goto filled;
    }
    /* An empty LeaseRecord given the fields as its item array, as list() would allocate it:
     * calling the type costs five times this, filling it from a tuple twice. */
    PyObject **items = PyMem_New(PyObject *, N_FIELDS);
    if (items == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    record = ((PyTypeObject *)LEASE_RECORD)->tp_alloc((PyTypeObject *)LEASE_RECORD, 0);
    if (record == NULL) {
        PyMem_Free(items);
        goto fail;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        items[i] = fields[i];
        fields[i] = NULL;
    }
    ((PyListObject *)record)->ob_item = items;
    ((PyListObject *)record)->allocated = N_FIELDS;
    Py_SET_SIZE(record, N_FIELDS);
filled:
    leases = pool_slot(pool, SLOT_LEASES);
    if (leases == NULL || !PyDict_Check(leases)) {
        if (leases != NULL)
            PyErr_SetString(PyExc_TypeError, "poolwatch: pool.leases is not a dict");
        goto fail;
    }
    /* one lookup when the key is free, as it nearly always is */
    PyObject *previous = PyDict_SetDefault(leases, key, record); /* borrowed */
    if (previous == NULL)
        goto fail;
    if (previous == record) {
        previous = NULL;
    }
    else { /* leased again without a checkin: this record replaces the older */
        Py_INCREF(previous);
        if (PyDict_SetItem(leases, key, record) < 0) {
            Py_DECREF(previous);
            goto fail;
        }
    }
    if (advance(pool, SLOT_CHECKOUT_COUNT, NULL) < 0) {
        Py_XDECREF(previous);
        goto fail;
    }
    if (previous != NULL) {
        /* The same connection leased twice without a checkin: end the older as an orphan. */
        PyObject *ended = PyObject_CallMethodObjArgs(
            tracker, S_end, previous, S_orphaned, ORPHAN_NOTE, Py_False, NULL);
        Py_DECREF(previous);
        if (ended == NULL)
            goto fail;
        Py_DECREF(ended);
    }
    Py_DECREF(leases);
    Py_DECREF(site);
    return record;
fail:
    for (int i = 0; i < N_FIELDS; i++)
        Py_XDECREF(fields[i]);
    Py_XDECREF(record);
    Py_XDECREF(leases);
    Py_XDECREF(site);
    return NULL;
}

static PyObject *
sp_checkout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 6 || nargs > 8) {
        PyErr_SetString(PyExc_TypeError,
                        "checkout(tracker, pending, seq, finder, pool, key, connection, site)");
        return NULL;
    }
    return checkout_impl(args[0], args[1], args[2], args[3], args[4], args[5],
                         nargs > 6 ? args[6] : Py_None, nargs > 7 ? args[7] : Py_None);
}

/* The record of a registered library pool object: pools[id(obj)] if its ref() is obj, as a
 * new reference; NULL without an exception when obj is not registered (yet). */
static PyObject *LAST_POOLS, *LAST_OBJECT, *LAST_RECORD; /* registered()'s last answer */

static PyObject *
registered(PyObject *pools, PyObject *obj)
{
    /* The same pool as last time (a request loop): its record, if its weak reference still
     * names obj. LAST_OBJECT is only compared, never dereferenced: a dead pool's record has a
     * dead reference, so an object that reused its address falls through to the dict. */
    if (obj == LAST_OBJECT && pools == LAST_POOLS) {
        PyObject *ref = pool_slot(LAST_RECORD, SLOT_REF);
        if (ref == NULL)
            return NULL;
        int same = PyWeakref_CheckRef(ref) && PyWeakref_GET_OBJECT(ref) == obj;
        Py_DECREF(ref);
        if (same)
            return Py_NewRef(LAST_RECORD);
    }
    PyObject *id = PyLong_FromVoidPtr(obj);
    if (id == NULL)
        return NULL;
    PyObject *record = PyDict_GetItemWithError(pools, id); /* borrowed */
    Py_DECREF(id);
    if (record == NULL)
        return NULL;
    PyObject *ref = pool_slot(record, SLOT_REF);
    if (ref == NULL)
        return NULL;
    int same = PyWeakref_CheckRef(ref) && PyWeakref_GET_OBJECT(ref) == obj;
    Py_DECREF(ref);
    if (!same)
        return NULL;
    PyObject *old_pools = LAST_POOLS, *old_record = LAST_RECORD;
    LAST_POOLS = Py_NewRef(pools);
    LAST_RECORD = Py_NewRef(record);
    LAST_OBJECT = obj;
    Py_XDECREF(old_pools);
    Py_XDECREF(old_record);
    return Py_NewRef(record);
}

/* find_pool(pools, obj) -> PoolRecord or None: Tracker.find_pool. */
static PyObject *
sp_find_pool(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "find_pool(pools, obj)");
        return NULL;
    }
    PyObject *record = registered(args[0], args[1]);
    return record != NULL || PyErr_Occurred() ? record : Py_NewRef(Py_None);
}

/* checkout_of(tracker, pending, seq, finder, pools, obj, connection) -> LeaseRecord, or None
 * when the library pool object obj is not registered: Tracker.checkout_of. */
static PyObject *
sp_checkout_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "checkout_of(tracker, pending, seq, finder, pools, obj, connection)");
        return NULL;
    }
    PyObject *record = registered(args[4], args[5]);
    if (record == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *key = PyLong_FromVoidPtr(args[6]);
    PyObject *lease = key ? checkout_impl(args[0], args[1], args[2], args[3], record, key,
                                          args[6], Py_None)
                          : NULL;
    Py_XDECREF(key);
    Py_DECREF(record);
    return lease;
}

/* dict.pop(key, None) without the second lookup of get-then-delete: a new reference, or NULL
 * (with an exception on failure, without one when the key is not there). */
static PyObject *
dict_pop(PyObject *dict, PyObject *key)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *value = NULL;
    return PyDict_Pop(dict, key, &value) < 0 ? NULL : value;
#else
    PyObject *missing = Py_None; /* the leases map never holds None */
    PyObject *value = _PyDict_Pop(dict, key, missing);
    if (value == missing) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
#endif
}

/* checkin(tracker, pending, pool, key, how="returned") -> LeaseRecord or None */
static PyObject *
checkin_impl(PyObject *tracker, PyObject *pending, PyObject *pool, PyObject *key, PyObject *how)
{
    PyObject *leases = pool_slot(pool, SLOT_LEASES);
    if (leases == NULL)
        return NULL;
    if (!PyDict_Check(leases)) {
        Py_DECREF(leases);
        PyErr_SetString(PyExc_TypeError, "poolwatch: pool.leases is not a dict");
        return NULL;
    }
    /* one lookup: taken out if it is there */
    PyObject *record = dict_pop(leases, key);
    Py_DECREF(leases);
    if (record == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (advance(pool, SLOT_CHECKIN_COUNT, NULL) < 0) {
        Py_DECREF(record);
        return NULL;
    }
    if (PyList_Check(record) && PyList_GET_SIZE(record) == N_FIELDS) {
        /* Its owner's weak reference goes with it: no callback for an owner collected later. */
        PyList_SetItem(record, F_STATE, Py_NewRef(how));
        PyList_SetItem(record, F_OWNER_REF, Py_NewRef(Py_None));
        /* the pool's spare: the next checkout refills it if no one else kept it */
        if ((PyObject *)Py_TYPE(record) == LEASE_RECORD &&
            (PyObject *)Py_TYPE(pool) == POOL_RECORD && SLOT_OFFSETS[SLOT_SPARE])
            pool_slot_set(pool, SLOT_SPARE, record);
    }
    if (drain_if_pending(tracker, pending) < 0) {
        Py_DECREF(record);
        return NULL;
    }
    return record;
}

static PyObject *
sp_checkin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "checkin(tracker, pending, pool, key, how)");
        return NULL;
    }
    return checkin_impl(args[0], args[1], args[2], args[3], nargs > 4 ? args[4] : S_returned);
}

/* checkin_of(tracker, pending, pools, obj, connection) -> LeaseRecord or None:
 * Tracker.checkin_of. */
static PyObject *
sp_checkin_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "checkin_of(tracker, pending, pools, obj, connection)");
        return NULL;
    }
    PyObject *record = registered(args[2], args[3]);
    if (record == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *key = PyLong_FromVoidPtr(args[4]);
    PyObject *lease = key ? checkin_impl(args[0], args[1], record, key, S_returned) : NULL;
    Py_XDECREF(key);
    Py_DECREF(record);
    return lease;
}

/* configure(task_pair, unknown_pair, lease_record, threads, current_thread, task_name,
 *           orphan_note, user_kind, loop_kind, pool_record) */
static PyObject *
sp_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "configure() takes 10 arguments");
        return NULL;
    }
    PyObject *lease_record = args[2], *pool_record = args[9];
    /* checkout builds records by giving a list its item array: a plain list subclass only */
    if (!PyType_Check(lease_record) ||
        !PyType_IsSubtype((PyTypeObject *)lease_record, &PyList_Type) ||
        ((PyTypeObject *)lease_record)->tp_basicsize != sizeof(PyListObject)) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(): lease_record must be a list subclass without fields");
        return NULL;
    }
    if (!PyDict_Check(args[3]) || !PyType_Check(pool_record)) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(): threads must be a dict, pool_record a type");
        return NULL;
    }
    long user = PyLong_AsLong(args[7]), loop = PyLong_AsLong(args[8]);
    if (PyErr_Occurred() || find_slots(pool_record) < 0)
        return NULL;
    Py_XSETREF(TASK_PAIR, Py_NewRef(args[0]));
    Py_XSETREF(UNKNOWN_PAIR, Py_NewRef(args[1]));
    Py_XSETREF(LEASE_RECORD, Py_NewRef(lease_record));
    Py_XSETREF(THREADS, Py_NewRef(args[3]));
    Py_XSETREF(CURRENT_THREAD, Py_NewRef(args[4]));
    Py_XSETREF(TASK_NAME, Py_NewRef(args[5]));
    Py_XSETREF(ORPHAN_NOTE, Py_NewRef(args[6]));
    Py_XSETREF(POOL_RECORD, Py_NewRef(pool_record));
    KIND_USER = user;
    KIND_LOOP = loop;
    Py_RETURN_NONE;
}

/* OwnerGone(pending, record): the callback of an owner's weak reference (set_owner), which
 * queues ("owner", record) for the tracker, as Tracker._set_owner's closure does. */
typedef struct {
    PyObject_HEAD
    PyObject *pending, *record;
} OwnerGoneObject;

static PyObject *S_owner, *S_append;

static PyObject *
owner_gone_call(PyObject *op, PyObject *args, PyObject *kwargs)
{
    OwnerGoneObject *self = (OwnerGoneObject *)op;
    PyObject *item = PyTuple_Pack(2, S_owner, self->record);
    if (item == NULL)
        return NULL;
    PyObject *done = PyObject_CallMethodOneArg(self->pending, S_append, item);
    Py_DECREF(item);
    return done;
}

static int
owner_gone_traverse(OwnerGoneObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pending);
    Py_VISIT(self->record);
    return 0;
}

static int
owner_gone_clear(OwnerGoneObject *self)
{
    Py_CLEAR(self->pending);
    Py_CLEAR(self->record);
    return 0;
}

static void
owner_gone_dealloc(OwnerGoneObject *self)
{
    PyObject_GC_UnTrack(self);
    owner_gone_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject OwnerGoneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolwatch._speedups.OwnerGone",
    .tp_basicsize = sizeof(OwnerGoneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Queues ('owner', record) when the owner of a lease is collected.",
    .tp_call = owner_gone_call,
    .tp_dealloc = (destructor)owner_gone_dealloc,
    .tp_traverse = (traverseproc)owner_gone_traverse,
    .tp_clear = (inquiry)owner_gone_clear,
};

/* set_owner(pending, record, owner): Tracker.set_owner. An owner that cannot be weakly
 * referenced is not watched. */
static PyObject *
sp_set_owner(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1]) || PyList_GET_SIZE(args[1]) != N_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "set_owner(pending, record, owner)");
        return NULL;
    }
    OwnerGoneObject *callback = PyObject_GC_New(OwnerGoneObject, &OwnerGoneType);
    if (callback == NULL)
        return NULL;
    callback->pending = Py_NewRef(args[0]);
    callback->record = Py_NewRef(args[1]);
    PyObject_GC_Track(callback);
    PyObject *ref = PyWeakref_NewRef(args[2], (PyObject *)callback);
    Py_DECREF(callback);
    if (ref == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *old = PyList_GET_ITEM(args[1], F_OWNER_REF);
    PyList_SET_ITEM(args[1], F_OWNER_REF, ref);
    Py_DECREF(old);
    Py_RETURN_NONE;
}

static PyObject *
sp_attach_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || PyList_GET_SIZE(args[0]) != N_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "attach_response(record, facts)");
        return NULL;
    }
    PyObject *old = PyList_GET_ITEM(args[0], F_RESPONSE);
    PyList_SET_ITEM(args[0], F_RESPONSE, Py_NewRef(args[1]));
    Py_DECREF(old);
    Py_RETURN_NONE;
}

/* Hook: a library method replaced by a C callable, for hooks that run on every request.
 *
 * A Python function standing in for a method costs a frame, and the interpreter's dispatch of
 * each of its bytecodes mispredicts often: measured under cachegrind, that made aiohttp's four
 * one-line hooks cost more than the C tracker calls they make. A Hook does the common case in
 * C and hands every other case to the Python hook (`slow`), which stays the reference and what
 * pure-Python installs use:
 *
 *   AFTER   original(*args), then call(*bound, args[first], args[second]);
 *   BEFORE  call(*bound, args[first], args[second]), then original(*args);
 *   GUARD   original(*args) when args[0].<attr> is value, else slow(*args);
 *   RESULT  result = original(*args), then call(*bound, args[0], result) when result.<attr> is
 *           value (or when result has no such attribute: `call` decides what that means);
 *   HTTPCORE_HANDLE, HTTPCORE_WAIT: httpcore's per-request hooks, with a `state` tuple (below);
 *   SQLALCHEMY_CHECKOUT, SQLALCHEMY_CHECKIN: SQLAlchemy's pool event listeners, with a `state`
 *           tuple (below); they wrap no library method: `original` is not called;
 *   URLLIB3_CHECKOUT: urllib3's HTTPConnectionPool._get_conn, with a `state` tuple (below), when
 *           args[0].<attr> is value, else slow(*args);
 *   SQLALCHEMY_GET: SQLAlchemy's QueuePool._do_get(pool): original(pool) when the pool cannot
 *           block (below), else slow(pool).
 *
 * `first` / `second` are positions in args, or names of attributes of args[0] (read when the
 * call is made). In AFTER and BEFORE, an `attr` makes the call conditional: made only when
 * args[0].<attr> is value as the hook is entered; the original runs either way.
 *
 * `call` is a tracker method (checkout_of, checkin_of: the C function and the arguments its
 * partial binds); when it returns None (a pool not seen yet), `miss(a, b)` is called. Keyword
 * arguments, too few arguments, or a missing `attr` go to `slow`; a missing argument attribute
 * is an error of `call`'s. An Exception from `call`/`miss` is passed to error(where, exc) and
 * never reaches the library's caller; the library's own exceptions pass through unchanged.
 * Bound like a function: the type is a method descriptor, so `obj.method(...)` calls it with
 * obj first and no bound-method object. It has a __dict__ for the attributes wraps() sets. */
enum {
    HOOK_AFTER,
    HOOK_BEFORE,
    HOOK_GUARD,
    HOOK_HTTPCORE_HANDLE,
    HOOK_HTTPCORE_WAIT,
    HOOK_SQLALCHEMY_CHECKOUT,
    HOOK_SQLALCHEMY_CHECKIN,
    HOOK_RESULT,
    HOOK_URLLIB3_CHECKOUT,
    HOOK_SQLALCHEMY_GET,
};

#define HOOK_MAX_BOUND 8

typedef struct {
    PyObject_HEAD
    PyObject *original, *slow, *call, *bound, *miss, *attr, *value, *error, *where, *dict;
    PyObject *first_attr, *second_attr; /* NULL: the argument is args[first] / args[second] */
    PyObject *state;       /* the httpcore and SQLAlchemy modes' tuple (see below); NULL else */
    PyObject *weakreflist; /* SQLAlchemy's event registry holds its listeners weakly */
    int mode;
    Py_ssize_t first, second, needed;
    vectorcallfunc vectorcall;
} HookObject;

/* The pending exception goes to error(where, exc) if it is an Exception; 0 then. Anything
 * else (KeyboardInterrupt, SystemExit) stays raised, as `except Exception` would leave it: -1. */
static int
report_error(PyObject *error, PyObject *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *done = PyObject_CallFunctionObjArgs(error, where, value ? value : Py_None, NULL);
    if (done == NULL)
        PyErr_WriteUnraisable(error);
    Py_XDECREF(done);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return 0;
}

static int
hook_report_at(HookObject *hook, PyObject *where)
{
    return report_error(hook->error, where);
}

static int
hook_report(HookObject *hook)
{
    return hook_report_at(hook, hook->where);
}

static PyObject *
hook_argument(PyObject *name, Py_ssize_t index, PyObject *const *args)
{
    return name == NULL ? Py_NewRef(args[index]) : PyObject_GetAttr(args[0], name);
}

/* call(*bound, a, b), and miss(a, b) when that returns None: 0, or what hook_report says */
static int
hook_call(HookObject *hook, PyObject *a, PyObject *b)
{
    /* its bound arguments laid out here (a partial would allocate) */
    PyObject *stack[HOOK_MAX_BOUND + 2];
    Py_ssize_t n = PyTuple_GET_SIZE(hook->bound);
    for (Py_ssize_t i = 0; i < n; i++)
        stack[i] = PyTuple_GET_ITEM(hook->bound, i);
    stack[n] = a;
    stack[n + 1] = b;
    PyObject *result = PyObject_Vectorcall(hook->call, stack, n + 2, NULL);
    if (result == Py_None && hook->miss != Py_None) {
        Py_DECREF(result);
        result = PyObject_Vectorcall(hook->miss, stack + n, 2, NULL);
    }
    if (result == NULL)
        return hook_report(hook);
    Py_DECREF(result);
    return 0;
}

static int
hook_track(HookObject *hook, PyObject *const *args)
{
    PyObject *a = hook_argument(hook->first_attr, hook->first, args);
    PyObject *b = a == NULL ? NULL : hook_argument(hook->second_attr, hook->second, args);
    int done = b == NULL ? hook_report(hook) : hook_call(hook, a, b);
    Py_XDECREF(a);
    Py_XDECREF(b);
    return done;
}

/* args[0].<attr> is value: 1 yes, 0 no, -1 the attribute is missing (-2 with an error that
 * must propagate, such as KeyboardInterrupt) */
static int
hook_condition(HookObject *hook, PyObject *const *args)
{
    PyObject *seen = PyObject_GetAttr(args[0], hook->attr);
    if (seen == NULL) { /* the Python hook decides what a missing attribute means */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -2;
        PyErr_Clear();
        return -1;
    }
    int is = seen == hook->value;
    Py_DECREF(seen);
    return is;
}

/* httpcore's pools: ConnectionPool.handle_request (sync) and PoolRequest.wait_for_connection
 * (sync and async: the async one returns the original's coroutine).
 *
 * The C twins of the wrappers in adapters/_httpx_async.py / _httpx_sync.py, for the common case
 * of a request: a pool seen before, and a connection the pool assigned as it queued the request.
 * Every other case (a pool seen first, a queued request, httpcore's retry on another
 * connection) runs the Python wrapper (`slow`), which stays the reference. Both pass a
 * request's Call through the same ContextVar, so a call begun in one continues in the other.
 * Measured with callgrind on a keep-alive loop: poolwatch added 19.5k instructions to an httpx
 * sync request with these wrappers in Python, 12.9k with them in C.
 *
 *   HANDLE  state = (var, find_pool, failed, attach_response, set_owner, response_facts)
 *   WAIT    state = (var, checkout)
 *
 * Call is the C twin of _httpx.Call: the fields start as None and the Python hooks read and
 * write them as attributes. */
enum { ST_VAR, ST_FIND_POOL, ST_FAILED, ST_ATTACH, ST_OWNER, ST_FACTS, N_HANDLE_STATE };
enum { ST_CHECKOUT = 1, N_WAIT_STATE };

typedef struct {
    PyObject_HEAD
    PyObject *record, *site, *wait, *pool_request, *connection, *lease;
} CallObject;

static PyMemberDef call_members[] = {
    {"record", T_OBJECT, offsetof(CallObject, record), 0, NULL},
    {"site", T_OBJECT, offsetof(CallObject, site), 0, NULL},
    {"wait", T_OBJECT, offsetof(CallObject, wait), 0, NULL},
    {"pool_request", T_OBJECT, offsetof(CallObject, pool_request), 0, NULL},
    {"connection", T_OBJECT, offsetof(CallObject, connection), 0, NULL},
    {"lease", T_OBJECT, offsetof(CallObject, lease), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int
call_traverse(CallObject *call, visitproc visit, void *arg)
{
    Py_VISIT(call->record);
    Py_VISIT(call->site);
    Py_VISIT(call->wait);
    Py_VISIT(call->pool_request);
    Py_VISIT(call->connection);
    Py_VISIT(call->lease);
    return 0;
}

static int
call_clear(CallObject *call)
{
    Py_CLEAR(call->record);
    Py_CLEAR(call->site);
    Py_CLEAR(call->wait);
    Py_CLEAR(call->pool_request);
    Py_CLEAR(call->connection);
    Py_CLEAR(call->lease);
    return 0;
}

static void
call_dealloc(CallObject *call)
{
    PyObject_GC_UnTrack(call);
    call_clear(call);
    Py_TYPE(call)->tp_free((PyObject *)call);
}

static PyTypeObject CallType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolwatch._speedups.Call",
    .tp_basicsize = sizeof(CallObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One httpcore handle_request call as the hooks see it (see _httpx.Call).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)call_dealloc,
    .tp_traverse = (traverseproc)call_traverse,
    .tp_clear = (inquiry)call_clear,
    .tp_members = call_members,
};

static PyObject *S_status, *S_headers, *S_stream, *S_connection;
static PyObject *W_request, *W_response, *W_checkout;

/* The pool returned `response` for the call's lease: its facts, deferred, and its stream as
 * the lease's owner, if the lease is still out. 0, or -1 with an exception. */
static int
httpcore_responded(PyObject *const *state, PyObject *lease, PyObject *response)
{
    PyObject *leases = pool_slot(PyList_GET_ITEM(lease, 0), SLOT_LEASES);
    if (leases == NULL)
        return -1;
    /* borrowed, and only compared: still out means this very record is the key's lease */
    PyObject *now =
        PyDict_Check(leases) ? PyDict_GetItemWithError(leases, PyList_GET_ITEM(lease, 1)) : NULL;
    Py_DECREF(leases);
    if (now != lease)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *status = PyObject_GetAttr(response, S_status);
    PyObject *headers = status ? PyObject_GetAttr(response, S_headers) : NULL;
    PyObject *facts = headers ? PyTuple_Pack(3, state[ST_FACTS], status, headers) : NULL;
    Py_XDECREF(status);
    Py_XDECREF(headers);
    if (facts == NULL)
        return -1;
    PyObject *done = PyObject_Vectorcall(state[ST_ATTACH], (PyObject *[]){lease, facts}, 2, NULL);
    Py_DECREF(facts);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    PyObject *stream = PyObject_GetAttr(response, S_stream);
    if (stream == NULL)
        return -1;
    done = PyObject_Vectorcall(state[ST_OWNER], (PyObject *[]){lease, stream}, 2, NULL);
    Py_DECREF(stream);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* httpcore_responded(error, state, call, response): Hooks.responded, for the Python wrappers
 * (the async handle_async_request; the sync one where it runs): what HANDLE does once the pool
 * has returned the response. Our errors go to error("httpx.response", exc). */
static PyObject *
sp_httpcore_responded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyTuple_CheckExact(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != N_HANDLE_STATE || !Py_IS_TYPE(args[2], &CallType)) {
        PyErr_SetString(PyExc_TypeError, "httpcore_responded(error, state, call, response)");
        return NULL;
    }
    PyObject *lease = ((CallObject *)args[2])->lease;
    if (lease == NULL || lease == Py_None || !PyList_Check(lease) ||
        PyList_GET_SIZE(lease) != N_FIELDS)
        Py_RETURN_NONE;
    Py_INCREF(lease);
    int failed = httpcore_responded(&PyTuple_GET_ITEM(args[1], 0), lease, args[3]);
    Py_DECREF(lease);
    if (failed < 0 && report_error(args[0], W_response) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* handle_request(pool, request): the call's Call in the ContextVar while the pool works. */
static PyObject *
httpcore_handle(HookObject *hook, PyObject *const *args, size_t nargsf)
{
    PyObject *const *state = &PyTuple_GET_ITEM(hook->state, 0);
    PyObject *record = PyObject_Vectorcall(state[ST_FIND_POOL], args, 1, NULL);
    if (record == Py_None) { /* a pool seen for the first time: the Python wrapper registers it */
        Py_DECREF(record);
        return PyObject_Vectorcall(hook->slow, args, nargsf, NULL);
    }
    CallObject *call = record ? PyObject_GC_New(CallObject, &CallType) : NULL;
    PyObject *token = NULL;
    if (call != NULL) {
        call->record = record;
        call->site = call->wait = call->pool_request = call->connection = call->lease = NULL;
        PyObject_GC_Track(call);
        token = PyContextVar_Set(state[ST_VAR], (PyObject *)call);
    }
    else
        Py_XDECREF(record);
    if (token == NULL) { /* the request goes on untracked */
        Py_XDECREF(call);
        if (hook_report_at(hook, W_request) < 0)
            return NULL;
        return PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    }
    PyObject *response = PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    PyObject *type = NULL, *value = NULL, *traceback = NULL;
    if (response == NULL) {
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL)
            PyException_SetTraceback(value, traceback);
    }
    int reset = PyContextVar_Reset(state[ST_VAR], token);
    Py_DECREF(token);
    if (reset < 0 && hook_report_at(hook, W_request) < 0) /* not an Exception: it goes on */
        goto replaced;
    if (response == NULL) {
        /* hooks.failed(call, exc), then the library's exception goes on as it was */
        PyObject *done = PyObject_Vectorcall(state[ST_FAILED],
                                             (PyObject *[]){(PyObject *)call, value}, 2, NULL);
        if (done == NULL && hook_report(hook) < 0)
            goto replaced;
        Py_XDECREF(done);
        PyErr_Restore(type, value, traceback);
        Py_DECREF(call);
        return NULL;
    }
    PyObject *lease = call->lease;
    if (lease != NULL && lease != Py_None && PyList_Check(lease) &&
        PyList_GET_SIZE(lease) == N_FIELDS && httpcore_responded(state, lease, response) < 0 &&
        hook_report_at(hook, W_response) < 0)
        Py_CLEAR(response);
    Py_DECREF(call);
    return response;
replaced: /* a KeyboardInterrupt in our part replaces what the library returned or raised */
    Py_XDECREF(response);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    Py_DECREF(call);
    return NULL;
}

/* PoolRequest.wait_for_connection(pool_request, timeout=None), sync or async: when the pool has
 * assigned the request its connection, waiting returns it at once, so the lease starts as the
 * wait is called and the original's result (a coroutine, for the async pool) is returned. */
static PyObject *
httpcore_wait(HookObject *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *const *state = &PyTuple_GET_ITEM(hook->state, 0);
    PyObject *call = NULL;
    if (PyVectorcall_NARGS(nargsf) < 1 || PyContextVar_Get(state[ST_VAR], NULL, &call) < 0) {
        PyErr_Clear();
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    }
    if (call == NULL || call == Py_None) { /* not a call the hooks follow */
        Py_XDECREF(call);
        return PyObject_Vectorcall(hook->original, args, nargsf, kwnames);
    }
    CallObject *own = (CallObject *)call;
    PyObject *connection = NULL;
    if (Py_IS_TYPE(call, &CallType) && (own->pool_request == NULL || own->pool_request == Py_None))
        connection = PyObject_GetAttr(args[0], S_connection);
    if (connection == NULL || connection == Py_None) {
        /* queued (a pool wait), httpcore's retry, or something unexpected: the Python hooks */
        Py_DECREF(call);
        if (connection == NULL && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            PyErr_Clear();
        }
        Py_XDECREF(connection);
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    }
    Py_XSETREF(own->pool_request, Py_NewRef(args[0]));
    Py_XSETREF(own->connection, connection); /* the reference getattr gave */
    PyObject *key = PyLong_FromVoidPtr(args[0]);
    PyObject *lease = key ? PyObject_Vectorcall(state[ST_CHECKOUT],
                                                (PyObject *[]){own->record ? own->record : Py_None,
                                                               key, own->connection},
                                                3, NULL)
                          : NULL;
    Py_XDECREF(key);
    Py_DECREF(call);
    if (lease != NULL)
        Py_XSETREF(own->lease, lease);
    else if (hook_report_at(hook, W_checkout) < 0)
        return NULL;
    return PyObject_Vectorcall(hook->original, args, nargsf, kwnames);
}

/* SQLAlchemy's "checkout" and "checkin" pool events: the C twins of on_checkout / on_checkin
 * in adapters/_sqlalchemy.py, for the common case. Every other case runs the Python listener
 * (`slow`), which stays the reference: a pool seen first, a connection record already leased (a
 * listener after ours made SQLAlchemy retry), a call site the tracker's finder cannot see (an
 * asyncio engine's greenlet, the ORM's generated code), a fairy collected before its checkin.
 * Measured on a `with engine.connect(): select 1` loop against PostgreSQL, the listeners in
 * Python cost about 6% of the client's CPU time; see bench/sqlalchemy_loop.py.
 *
 *   CHECKOUT  state = (find_pool, capture, checkout, parents, finder)
 *                                                    args = (dbapi, record, fairy)
 *   CHECKIN   state = (find_pool, checkin)           args = (dbapi, record)
 *
 * capture() is the tracker's finder bound to its depth: called from here, the frame it starts
 * from is SQLAlchemy's dispatch (a C listener adds none). When it finds no user frame (an
 * asyncio engine's greenlet holds only SQLAlchemy's), the greenlets that switched to this one
 * are looked in, as the Python listener does: by sa_parents() below where `finder` is the
 * tracker's CallSiteFinder (its capture is the C one and sites carry no stack), else by
 * parents() (_SiteFinder.find_in_parents). */
enum {
    ST_SA_FIND_POOL,
    ST_SA_CAPTURE,
    ST_SA_CHECKOUT,
    ST_SA_PARENTS,
    ST_SA_FINDER,
    N_SA_CHECKOUT_STATE
};
enum { ST_SA_CHECKIN = 1, N_SA_CHECKIN_STATE };
static PyObject *S_record_pool, *S_discarded, *S_sqlalchemy_prefix, *S_filename;
static PyObject *S_greenlet, *S_getcurrent, *S_parent, *S_gr_frame;

/* The lease of `key` in the pool of record `record`: a borrowed reference, or NULL (with an
 * exception if the lookup failed). */
static PyObject *
lease_in(PyObject *record, PyObject *key)
{
    PyObject *leases = pool_slot(record, SLOT_LEASES);
    if (leases == NULL)
        return NULL;
    PyObject *lease = NULL;
    if (PyDict_Check(leases))
        lease = PyDict_GetItemWithError(leases, key); /* borrowed: the dict keeps it */
    else
        PyErr_SetString(PyExc_TypeError, "poolwatch: pool.leases is not a dict");
    Py_DECREF(leases);
    return lease;
}

/* 1 when capture() found no user frame, 0 when it found one, -1 when `site` is not a pair. */
static int
site_unknown(PyObject *site)
{
    if (!PyTuple_Check(site) || PyTuple_GET_SIZE(site) < 1 || !PyTuple_Check(UNKNOWN_PAIR))
        return -1;
    return PyTuple_GET_ITEM(site, 0) == PyTuple_GET_ITEM(UNKNOWN_PAIR, 0);
}

/* A call site the Python listener must look for itself: SQLAlchemy's generated code (a file
 * named `<sqlalchemy ...>`, which no library directory holds), or not a pair at all. */
static int
site_needs_python(PyObject *site)
{
    int unknown = site_unknown(site);
    if (unknown != 0)
        return unknown < 0;
    PyObject *callsite = PyTuple_GET_ITEM(site, 0);
    PyObject *filename = PyObject_GetAttr(callsite, S_filename);
    int generated = filename == NULL || !PyUnicode_Check(filename) ||
                    PyUnicode_Tailmatch(filename, S_sqlalchemy_prefix, 0, PY_SSIZE_T_MAX, -1) != 0;
    Py_XDECREF(filename);
    if (filename == NULL)
        PyErr_Clear(); /* whatever went wrong, the Python listener looks again */
    return generated;
}

/* How a listener call ends: the Python listener when the case is `slow`, else None, after
 * reporting an error of ours (`result` NULL with an exception set). */
static PyObject *
listener_end(HookObject *hook, PyObject *const *args, size_t nargsf, int slow, PyObject *result)
{
    if (slow) {
        Py_XDECREF(result);
        return PyObject_Vectorcall(hook->slow, args, nargsf, NULL);
    }
    if (result == NULL && PyErr_Occurred() && hook_report(hook) < 0)
        return NULL;
    Py_XDECREF(result);
    Py_RETURN_NONE;
}

static PyObject *sp_capture_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* _SiteFinder.find_in_parents in C, for the common case: the first user frame in the
 * greenlets that switched to this one, nearest first, found by capture_at(finder, frame); None
 * when there is none (or greenlet is not loaded). Sets *python, and returns NULL with no
 * exception, when that frame is SQLAlchemy's generated code: the Python listener looks again. */
static PyObject *
sa_parents(PyObject *finder, int *python)
{
    PyObject *module = PyImport_GetModule(S_greenlet);
    if (module == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    PyObject *current = PyObject_CallMethodNoArgs(module, S_getcurrent);
    Py_DECREF(module);
    PyObject *outer = current ? PyObject_GetAttr(current, S_parent) : NULL;
    Py_XDECREF(current);
    PyObject *found = NULL;
    while (outer != NULL && outer != Py_None) {
        PyObject *frame = PyObject_GetAttr(outer, S_gr_frame);
        if (frame == NULL)
            break;
        if (frame != Py_None) {
            found = sp_capture_at(NULL, (PyObject *[]){finder, frame}, 2);
            Py_DECREF(frame);
            if (found == NULL)
                break;
            PyObject *callsite = PyTuple_Check(found) && PyTuple_GET_SIZE(found) > 0
                                     ? PyTuple_GET_ITEM(found, 0)
                                     : NULL;
            if (callsite != PyTuple_GET_ITEM(UNKNOWN_PAIR, 0) &&
                callsite != PyTuple_GET_ITEM(TASK_PAIR, 0)) {
                if (site_needs_python(found)) {
                    Py_CLEAR(found);
                    *python = 1;
                }
                break;
            }
            Py_CLEAR(found); /* the event loop, or SQLAlchemy's frames only: the next one */
        }
        else
            Py_DECREF(frame);
        Py_SETREF(outer, PyObject_GetAttr(outer, S_parent));
    }
    if (outer == NULL) /* an error reading a greenlet */
        return NULL;
    Py_DECREF(outer);
    if (found == NULL && !*python && !PyErr_Occurred())
        found = Py_NewRef(Py_None);
    return found;
}

static PyObject *
sqlalchemy_checkout(HookObject *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 3)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    PyObject *const *state = &PyTuple_GET_ITEM(hook->state, 0);
    PyObject *pool = NULL, *record = NULL, *key = NULL, *site = NULL, *lease = NULL;
    int slow = 0;
    /* the record's pool, as the checkin reads it: the fairy's (the same pool) would be one
     * more attribute looked up per checkout, through its __getattr__ */
    if ((pool = PyObject_GetAttr(args[1], S_record_pool)) == NULL)
        goto out;
    if ((record = PyObject_Vectorcall(state[ST_SA_FIND_POOL], &pool, 1, NULL)) == NULL)
        goto out;
    if (record == Py_None || (key = PyLong_FromVoidPtr(args[1])) == NULL) {
        slow = record == Py_None; /* a pool seen first: the Python listener registers it */
        goto out;
    }
    PyObject *held = lease_in(record, key);
    if (held != NULL || PyErr_Occurred()) {
        slow = held != NULL;
        goto out;
    }
    if ((site = PyObject_Vectorcall(state[ST_SA_CAPTURE], NULL, 0, NULL)) == NULL)
        goto out;
    if (site_unknown(site) == 1) {
        PyObject *finder = state[ST_SA_FINDER];
        PyObject *found = finder != Py_None
                              ? sa_parents(finder, &slow)
                              : PyObject_Vectorcall(state[ST_SA_PARENTS], NULL, 0, NULL);
        if (found == NULL)
            goto out;
        if (found == Py_None)
            Py_DECREF(found);
        else
            Py_SETREF(site, found);
    }
    if (site_needs_python(site)) {
        slow = 1;
        goto out;
    }
    lease = PyObject_Vectorcall(state[ST_SA_CHECKOUT],
                                (PyObject *[]){record, key, args[2], site}, 4, NULL);
out:
    Py_XDECREF(pool);
    Py_XDECREF(record);
    Py_XDECREF(key);
    Py_XDECREF(site);
    return listener_end(hook, args, nargsf, slow, lease);
}

static PyObject *
sqlalchemy_checkin(HookObject *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 2)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
#if PY_VERSION_HEX >= 0x030F0000
    /* A collected fairy's weak reference may outlive its finalizer (gh-135552): the Python
     * listener tells the cases apart. */
    return PyObject_Vectorcall(hook->slow, args, nargsf, NULL);
#else
    PyObject *const *state = &PyTuple_GET_ITEM(hook->state, 0);
    PyObject *pool = NULL, *record = NULL, *key = NULL, *done = NULL;
    int slow = 0;
    if ((pool = PyObject_GetAttr(args[1], S_record_pool)) == NULL) {
        /* not a _ConnectionRecord as we know it: the Python listener decides */
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            goto out;
        PyErr_Clear();
        slow = 1;
        goto out;
    }
    if ((record = PyObject_Vectorcall(state[ST_SA_FIND_POOL], &pool, 1, NULL)) == NULL ||
        record == Py_None || (key = PyLong_FromVoidPtr(args[1])) == NULL)
        goto out; /* None: a pool poolwatch does not follow, nothing to check in */
    PyObject *lease = lease_in(record, key);
    if (lease == NULL)
        goto out;
    /* a dead weak reference to the fairy: the collector returns it (the Python listener
     * reports that) */
    PyObject *ref = PyList_Check(lease) && PyList_GET_SIZE(lease) == N_FIELDS
                        ? PyList_GET_ITEM(lease, 2)
                        : NULL;
    if (ref == NULL || !PyWeakref_CheckRef(ref) || PyWeakref_GET_OBJECT(ref) == Py_None) {
        slow = 1;
        goto out;
    }
    PyObject *how = args[0] == Py_None ? S_discarded : S_returned;
    done = PyObject_Vectorcall(state[ST_SA_CHECKIN], (PyObject *[]){record, key, how}, 3, NULL);
out:
    Py_XDECREF(pool);
    Py_XDECREF(record);
    Py_XDECREF(key);
    return listener_end(hook, args, nargsf, slow, done);
#endif
}

/* urllib3's HTTPConnectionPool._get_conn(pool, timeout=None), passed on as urlopen calls it
 * (the timeout by keyword): the C twin of the Python hook in adapters/_urllib3.py for a pool
 * seen before that does not block (`block` False: urllib3's and requests' default). A blocking
 * pool (whose waits are timed, and whose exhaustion is counted) and a pool seen first run the
 * Python hook. Measured with cachegrind on a keep-alive loop, the Python hooks' dispatch was
 * the largest part of what poolwatch added to a urllib3 request.
 *
 *   state = (find_pool, checkout, last)
 *
 * checkout(record, key, connection) captures the call site itself, from urlopen's frame (a C
 * hook adds none). `last` is the thread-local whose `lease` the getresponse and _put_conn hooks
 * read: the lease this thread took last. */
enum { ST_U3_FIND_POOL, ST_U3_CHECKOUT, ST_U3_LAST, N_U3_STATE };
static PyObject *S_lease;

/* This call leased nothing: the _put_conn(None) of urlopen's error path must not end the lease
 * this thread took before (`missed` in the Python adapter). A pending exception stays. */
static void
urllib3_forget(PyObject *last)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (PyObject_SetAttr(last, S_lease, Py_None) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, traceback);
}

static PyObject *
urllib3_checkout(HookObject *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) < 1)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    int is = hook_condition(hook, args);
    if (is == -2)
        return NULL;
    if (is != 1)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    PyObject *const *state = &PyTuple_GET_ITEM(hook->state, 0);
    PyObject *record = PyObject_Vectorcall(state[ST_U3_FIND_POOL], args, 1, NULL);
    if (record == Py_None) { /* a pool seen first: the Python hook registers it */
        Py_DECREF(record);
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    }
    if (record == NULL) { /* the request goes on untracked */
        if (hook_report(hook) < 0)
            return NULL;
        urllib3_forget(state[ST_U3_LAST]);
        return PyObject_Vectorcall(hook->original, args, nargsf, kwnames);
    }
    PyObject *conn = PyObject_Vectorcall(hook->original, args, nargsf, kwnames);
    if (conn == NULL) {
        urllib3_forget(state[ST_U3_LAST]);
        Py_DECREF(record);
        return NULL;
    }
    PyObject *key = PyLong_FromVoidPtr(conn);
    PyObject *lease = key ? PyObject_Vectorcall(state[ST_U3_CHECKOUT],
                                                (PyObject *[]){record, key, conn}, 3, NULL)
                          : NULL;
    int failed = lease == NULL || PyObject_SetAttr(state[ST_U3_LAST], S_lease, lease) < 0;
    Py_XDECREF(lease);
    Py_XDECREF(key);
    Py_DECREF(record);
    if (failed) {
        if (hook_report(hook) < 0)
            Py_CLEAR(conn); /* not an Exception (KeyboardInterrupt): it goes on */
        urllib3_forget(state[ST_U3_LAST]);
    }
    return conn;
}

/* RESULT: the original, then call(args[0], result) when result.<attr> is value */
static PyObject *
hook_result(HookObject *hook, PyObject *const *args, size_t nargsf)
{
    PyObject *result = PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    if (result == NULL)
        return NULL;
    int is = hook_condition(hook, &result);
    if (is == -2 || (is != 0 && hook_call(hook, args[0], result) < 0))
        Py_CLEAR(result);
    return result;
}

/* SQLAlchemy's QueuePool._do_get(pool), the C twin of _do_get in adapters/_sqlalchemy.py: the
 * original itself while the pool cannot block, i.e. while it has no overflow limit
 * (`_max_overflow` -1) or is below it (`_overflow < _max_overflow`), as QueuePool decides
 * whether to wait. Else, or when those are not ints, the Python hook: it shows the thread as a
 * waiter and counts a timeout. Only a call that may block raises the pool's TimeoutError; when a
 * call that could not block finds the pool full after all, the original calls
 * `self._do_get()` again, which comes back through this hook. A Python frame per checkout
 * measured about 1% of a `with engine.connect(): select 1` loop's CPU time on PostgreSQL. */
static PyObject *S_max_overflow, *S_overflow;

static PyObject *
sqlalchemy_get(HookObject *hook, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 1)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    int may_block = 1;
    PyObject *limit = PyObject_GetAttr(args[0], S_max_overflow);
    PyObject *overflow = limit ? PyObject_GetAttr(args[0], S_overflow) : NULL;
    if (overflow != NULL && PyLong_CheckExact(limit) && PyLong_CheckExact(overflow)) {
        long most = PyLong_AsLong(limit), now = PyLong_AsLong(overflow);
        if (!PyErr_Occurred())
            may_block = most > -1 && now >= most;
    }
    Py_XDECREF(limit);
    Py_XDECREF(overflow);
    PyErr_Clear(); /* whatever went wrong, the Python hook looks again */
    return PyObject_Vectorcall(may_block ? hook->slow : hook->original, args, nargsf, NULL);
}

static PyObject *
hook_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    HookObject *hook = (HookObject *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (hook->mode == HOOK_HTTPCORE_WAIT)
        return httpcore_wait(hook, args, nargsf, kwnames);
    if (hook->mode == HOOK_SQLALCHEMY_CHECKOUT)
        return sqlalchemy_checkout(hook, args, nargsf, kwnames);
    if (hook->mode == HOOK_SQLALCHEMY_CHECKIN)
        return sqlalchemy_checkin(hook, args, nargsf, kwnames);
    if (hook->mode == HOOK_URLLIB3_CHECKOUT)
        return urllib3_checkout(hook, args, nargsf, kwnames);
    if (hook->mode == HOOK_SQLALCHEMY_GET)
        return sqlalchemy_get(hook, args, nargsf, kwnames);
    if (kwnames != NULL || nargs < hook->needed)
        return PyObject_Vectorcall(hook->slow, args, nargsf, kwnames);
    if (hook->mode == HOOK_HTTPCORE_HANDLE)
        return httpcore_handle(hook, args, nargsf);
    if (hook->mode == HOOK_RESULT)
        return hook_result(hook, args, nargsf);
    if (hook->attr != Py_None) {
        int is = hook_condition(hook, args);
        if (is == -2)
            return NULL;
        if (is == -1 || (is == 0 && hook->mode == HOOK_GUARD))
            return PyObject_Vectorcall(hook->slow, args, nargsf, NULL);
        if (is == 0 || hook->mode == HOOK_GUARD)
            return PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    }
    if (hook->mode == HOOK_BEFORE) {
        if (hook_track(hook, args) < 0)
            return NULL;
        return PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    }
    PyObject *result = PyObject_Vectorcall(hook->original, args, nargsf, NULL);
    if (result != NULL && hook_track(hook, args) < 0)
        Py_CLEAR(result);
    return result;
}

static PyObject *
hook_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"mode", "original", "slow",   "error", "where", "call",  "bound",
                            "miss", "first",    "second", "attr",  "value", "state", NULL};
    int mode;
    PyObject *original, *slow, *error, *where, *call = Py_None, *miss = Py_None;
    PyObject *bound = NULL, *attr = Py_None, *value = Py_None, *state = NULL;
    PyObject *first_spec = NULL, *second_spec = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOOOU|$OO!OOOOOO!:Hook", names, &mode,
                                     &original, &slow, &error, &where, &call, &PyTuple_Type,
                                     &bound, &miss, &first_spec, &second_spec, &attr, &value,
                                     &PyTuple_Type, &state))
        return NULL;
    /* the httpcore modes: state = (ContextVar, callables...) of the length the mode reads; the
     * SQLAlchemy modes: callables; urllib3's: callables, then the thread-local */
    int httpcore = mode == HOOK_HTTPCORE_HANDLE || mode == HOOK_HTTPCORE_WAIT;
    int listener = mode == HOOK_SQLALCHEMY_CHECKOUT || mode == HOOK_SQLALCHEMY_CHECKIN;
    int urllib3 = mode == HOOK_URLLIB3_CHECKOUT;
    int bad_state = 0;
    if (httpcore || listener || urllib3) {
        Py_ssize_t want = mode == HOOK_HTTPCORE_HANDLE     ? N_HANDLE_STATE
                          : mode == HOOK_HTTPCORE_WAIT     ? N_WAIT_STATE
                          : mode == HOOK_SQLALCHEMY_CHECKOUT ? N_SA_CHECKOUT_STATE
                          : mode == HOOK_SQLALCHEMY_CHECKIN  ? N_SA_CHECKIN_STATE
                                                           : N_U3_STATE;
        bad_state = state == NULL || PyTuple_GET_SIZE(state) != want ||
                    (httpcore && !PyContextVar_CheckExact(PyTuple_GET_ITEM(state, ST_VAR)));
        /* the last of urllib3's is its thread-local, of a SQLAlchemy checkout its finder */
        Py_ssize_t to = urllib3 ? ST_U3_LAST : mode == HOOK_SQLALCHEMY_CHECKOUT ? ST_SA_FINDER : want;
        for (Py_ssize_t i = httpcore ? 1 : 0; !bad_state && i < to; i++)
            bad_state = !PyCallable_Check(PyTuple_GET_ITEM(state, i));
    }
    else
        bad_state = state != NULL;
    int needs_attr = mode == HOOK_GUARD || mode == HOOK_RESULT || urllib3;
    int needs_call =
        !httpcore && !listener && !urllib3 && mode != HOOK_GUARD && mode != HOOK_SQLALCHEMY_GET;
    /* first / second: a position (default 0 / 1) or an attribute name of args[0] */
    Py_ssize_t first = 0, second = 1;
    PyObject *first_attr = NULL, *second_attr = NULL;
    int bad_spec = 0;
    if (first_spec != NULL) {
        if (PyUnicode_Check(first_spec))
            first_attr = first_spec;
        else if ((first = PyLong_AsSsize_t(first_spec)) < 0)
            bad_spec = 1;
    }
    if (second_spec != NULL) {
        if (PyUnicode_Check(second_spec))
            second_attr = second_spec;
        else if ((second = PyLong_AsSsize_t(second_spec)) < 0)
            bad_spec = 1;
    }
    PyErr_Clear(); /* a non-integer position is reported below, with the others */
    if (bound == NULL)
        bound = PyTuple_New(0);
    else
        Py_INCREF(bound);
    if (bound == NULL)
        return NULL;
    if (PyTuple_GET_SIZE(bound) > HOOK_MAX_BOUND || mode < HOOK_AFTER ||
        mode > HOOK_SQLALCHEMY_GET || bad_spec || bad_state ||
        (attr != Py_None && !PyUnicode_Check(attr)) || (needs_attr && attr == Py_None) ||
        (needs_call && !PyCallable_Check(call)) ||
        !PyCallable_Check(original) || !PyCallable_Check(slow) || !PyCallable_Check(error)) {
        Py_DECREF(bound);
        PyErr_SetString(PyExc_ValueError,
                        "Hook(mode, original, slow, error, where, *, call, bound, miss, first, "
                        "second, attr, value, state): a GUARD hook needs attr, an httpcore hook "
                        "its state tuple (a ContextVar, then callables), a SQLAlchemy listener "
                        "its state tuple of callables (a checkout's last: its finder or None), "
                        "a urllib3 checkout attr and its state "
                        "tuple (two callables, then the thread-local), a RESULT hook attr and a "
                        "callable call, a SQLALCHEMY_GET hook none of these, the others a "
                        "callable call; call takes at most 8 bound "
                        "arguments; first and second are positions (0 or more) or attribute "
                        "names, attr a name");
        return NULL;
    }
    HookObject *hook = (HookObject *)type->tp_alloc(type, 0);
    if (hook == NULL) {
        Py_DECREF(bound);
        return NULL;
    }
    hook->bound = bound;
    hook->mode = mode;
    hook->original = Py_NewRef(original);
    hook->slow = Py_NewRef(slow);
    hook->error = Py_NewRef(error);
    hook->where = Py_NewRef(where);
    hook->call = Py_NewRef(call);
    hook->miss = Py_NewRef(miss);
    hook->attr = Py_NewRef(attr);
    hook->value = Py_NewRef(value);
    hook->first = first;
    hook->second = second;
    hook->first_attr = Py_XNewRef(first_attr);
    hook->second_attr = Py_XNewRef(second_attr);
    hook->state = Py_XNewRef(state);
    hook->needed = 1;
    if (mode != HOOK_GUARD && mode != HOOK_RESULT) { /* RESULT calls call(args[0], result) */
        if (first_attr == NULL)
            hook->needed = Py_MAX(hook->needed, first + 1);
        if (second_attr == NULL)
            hook->needed = Py_MAX(hook->needed, second + 1);
    }
    hook->vectorcall = hook_vectorcall;
    return (PyObject *)hook;
}

static int
hook_traverse(HookObject *hook, visitproc visit, void *arg)
{
    Py_VISIT(hook->original);
    Py_VISIT(hook->slow);
    Py_VISIT(hook->call);
    Py_VISIT(hook->bound);
    Py_VISIT(hook->miss);
    Py_VISIT(hook->attr);
    Py_VISIT(hook->value);
    Py_VISIT(hook->error);
    Py_VISIT(hook->where);
    Py_VISIT(hook->dict);
    Py_VISIT(hook->first_attr);
    Py_VISIT(hook->second_attr);
    Py_VISIT(hook->state);
    return 0;
}

static int
hook_clear(HookObject *hook)
{
    Py_CLEAR(hook->original);
    Py_CLEAR(hook->slow);
    Py_CLEAR(hook->call);
    Py_CLEAR(hook->bound);
    Py_CLEAR(hook->miss);
    Py_CLEAR(hook->attr);
    Py_CLEAR(hook->value);
    Py_CLEAR(hook->error);
    Py_CLEAR(hook->where);
    Py_CLEAR(hook->dict);
    Py_CLEAR(hook->first_attr);
    Py_CLEAR(hook->second_attr);
    Py_CLEAR(hook->state);
    return 0;
}

static void
hook_dealloc(HookObject *hook)
{
    PyObject_GC_UnTrack(hook);
    if (hook->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)hook);
    hook_clear(hook);
    Py_TYPE(hook)->tp_free((PyObject *)hook);
}

/* Bound like a function: `obj.method` is a bound method, `Class.method` the hook itself. */
static PyObject *
hook_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
hook_repr(HookObject *hook)
{
    return PyUnicode_FromFormat("<poolwatch hook of %R>", hook->original);
}

static PyTypeObject HookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolwatch._speedups.Hook",
    .tp_basicsize = sizeof(HookObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_METHOD_DESCRIPTOR |
                Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A library method replaced by a C hook (see _speedups.c).",
    .tp_new = hook_new,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_descr_get = hook_get,
    .tp_repr = (reprfunc)hook_repr,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HookObject, vectorcall),
    .tp_dictoffset = offsetof(HookObject, dict),
    .tp_weaklistoffset = offsetof(HookObject, weakreflist),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};

static PyMethodDef methods[] = {
    {"capture_at", (PyCFunction)(void (*)(void))sp_capture_at, METH_FASTCALL,
     "capture_at(finder, frame): CallSiteFinder.capture(0) from a frame of any stack."},
    {"capture", (PyCFunction)(void (*)(void))sp_capture, METH_FASTCALL,
     "capture(finder, depth=0, skip=0, trusted=0): CallSiteFinder.capture."},
    {"checkout", (PyCFunction)(void (*)(void))sp_checkout, METH_FASTCALL,
     "checkout(tracker, pending, seq, finder, pool, key, connection=None, site=None)."},
    {"checkin", (PyCFunction)(void (*)(void))sp_checkin, METH_FASTCALL,
     "checkin(tracker, pending, pool, key, how='returned')."},
    {"set_owner", (PyCFunction)(void (*)(void))sp_set_owner, METH_FASTCALL,
     "set_owner(pending, record, owner): Tracker.set_owner."},
    {"httpcore_responded", (PyCFunction)(void (*)(void))sp_httpcore_responded, METH_FASTCALL,
     "httpcore_responded(error, state, call, response): _httpx.Hooks.responded."},
    {"attach_response", (PyCFunction)(void (*)(void))sp_attach_response, METH_FASTCALL,
     "attach_response(record, facts): Tracker.attach_response."},
    {"find_pool", (PyCFunction)(void (*)(void))sp_find_pool, METH_FASTCALL,
     "find_pool(pools, obj): the registered record of a library pool object, or None."},
    {"checkout_of", (PyCFunction)(void (*)(void))sp_checkout_of, METH_FASTCALL,
     "checkout_of(tracker, pending, seq, finder, pools, obj, connection)."},
    {"checkin_of", (PyCFunction)(void (*)(void))sp_checkin_of, METH_FASTCALL,
     "checkin_of(tracker, pending, pools, obj, connection)."},
    {"forget", sp_forget, METH_NOARGS,
     "Empty the call-site caches (the finder's kinds changed)."},
    {"configure", (PyCFunction)(void (*)(void))sp_configure, METH_FASTCALL,
     "Give the module the constants and types it shares with the Python code."},
    {NULL, NULL, 0, NULL},
};

static int
intern_names(void)
{
#define NAME(var, text)                                                                       \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                     \
        return -1;
    NAME(S_skip, "_skip")
    NAME(S_interned, "_interned")
    NAME(S_kind, "_kind")
    NAME(S_intern, "_intern")
    NAME(S_drain, "_drain")
    NAME(S_callsites, "callsites")
    NAME(S_stack_depth, "stack_depth")
    NAME(S_asyncio_events, "asyncio.events")
    NAME(S_get_running_loop, "_get_running_loop")
    NAME(S_asyncio_tasks, "asyncio.tasks")
    NAME(S_current_tasks, "_current_tasks")
    NAME(S_get_name, "get_name")
    NAME(S_clock, "_clock")
    NAME(SLOT_NAMES[SLOT_LEASES], "leases")
    NAME(SLOT_NAMES[SLOT_CHECKOUT_COUNT], "checkout_count")
    NAME(SLOT_NAMES[SLOT_CHECKIN_COUNT], "checkin_count")
    NAME(SLOT_NAMES[SLOT_REF], "ref")
    NAME(SLOT_NAMES[SLOT_SPARE], "spare")
    NAME(S_owner, "owner")
    NAME(S_append, "append")
    NAME(S_end, "_end")
    NAME(S_returned, "returned")
    NAME(S_orphaned, "orphaned")
    NAME(S_capture, "capture")
    NAME(S_capture_python, "_capture")
    NAME(S_status, "status")
    NAME(S_headers, "headers")
    NAME(S_stream, "stream")
    NAME(S_connection, "connection")
    NAME(W_request, "httpx.request")
    NAME(W_response, "httpx.response")
    NAME(W_checkout, "httpx.checkout")
    NAME(S_record_pool, "_ConnectionRecord__pool")
    NAME(S_discarded, "discarded")
    NAME(S_sqlalchemy_prefix, "<sqlalchemy")
    NAME(S_max_overflow, "_max_overflow")
    NAME(S_overflow, "_overflow")
    NAME(S_greenlet, "greenlet")
    NAME(S_getcurrent, "getcurrent")
    NAME(S_parent, "parent")
    NAME(S_gr_frame, "gr_frame")
    NAME(S_filename, "filename")
    NAME(S_lease, "lease")
    NAME(S_thread_key, "poolwatch.thread")
    if ((ZERO = PyLong_FromLong(0)) == NULL)
        return -1;
#undef NAME
    return 0;
}
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "poolwatch._speedups",
    "The tracker's hot path in C (see _speedups.c); AVAILABLE says whether this build has it.",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
#if POOLWATCH_SPEEDUPS
    if (intern_names() < 0 || PyType_Ready(&HookType) < 0 || PyType_Ready(&OwnerGoneType) < 0 ||
        PyType_Ready(&CallType) < 0 ||
        PyModule_AddObjectRef(module, "Hook", (PyObject *)&HookType) < 0 ||
        PyModule_AddObjectRef(module, "Call", (PyObject *)&CallType) < 0 ||
        PyModule_AddIntConstant(module, "HTTPCORE_HANDLE", HOOK_HTTPCORE_HANDLE) < 0 ||
        PyModule_AddIntConstant(module, "HTTPCORE_WAIT", HOOK_HTTPCORE_WAIT) < 0 ||
        PyModule_AddIntConstant(module, "SQLALCHEMY_CHECKOUT", HOOK_SQLALCHEMY_CHECKOUT) < 0 ||
        PyModule_AddIntConstant(module, "SQLALCHEMY_CHECKIN", HOOK_SQLALCHEMY_CHECKIN) < 0 ||
        PyModule_AddIntConstant(module, "AFTER", HOOK_AFTER) < 0 ||
        PyModule_AddIntConstant(module, "BEFORE", HOOK_BEFORE) < 0 ||
        PyModule_AddIntConstant(module, "GUARD", HOOK_GUARD) < 0 ||
        PyModule_AddIntConstant(module, "RESULT", HOOK_RESULT) < 0 ||
        PyModule_AddIntConstant(module, "URLLIB3_CHECKOUT", HOOK_URLLIB3_CHECKOUT) < 0 ||
        PyModule_AddIntConstant(module, "SQLALCHEMY_GET", HOOK_SQLALCHEMY_GET) < 0) {
        Py_DECREF(module);
        return NULL;
    }
#endif
    if (PyModule_AddIntConstant(module, "AVAILABLE", POOLWATCH_SPEEDUPS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

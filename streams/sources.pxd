# Stage 1's classes as extension types when compiled (an augmenting .pxd: sources.py stays plain
# Python and runs unchanged without Cython). Attributes of ``self`` become struct fields instead
# of instance-dict lookups, and the per-event methods direct C calls instead of attribute lookups
# and Python calls. Every value is still a Python object: the arithmetic is Python's.

cimport cython

cdef class OpenWindow:
    cdef public object start, saved_parts, firsts, pending
    cdef public dict parts
    cdef public set touched
    cdef public object chunks, saved_firsts, saved_pending
    cpdef part(self, key, n)

cdef class Outcome:
    cdef public object accepted, duplicates, skipped, late

cdef class Source:
    cdef public object topic, partition, id, p, n, shard, st, closed, emitted, upto
    cdef public object last_arrival, assigned_at, _pruned_at, cur
    cdef public object gone_facts, gone_markers, gone_chunks, id_logs
    cdef public object gone_logs, meta_dirty, pseudo, st_at_arrival
    cdef public dict windows, markers, facts, guard_windows, guard_facts, _dim_cache
    cdef public set dirty_windows, dirty_facts, stored_windows
    cdef public list new_ids, messages, by_last
    @cython.locals(f=dict, seen=dict, out=Outcome)
    cpdef record(self, offset, events, now=*)
    cpdef _advance(self, ts)
    cpdef emit_target(self)
    cpdef emit_until(self, target)
    cpdef window_message(self, w)
    @cython.locals(w=OpenWindow)
    cpdef window(self, ts)
    cpdef dims(self, tuple pairs)
    cpdef cell(self, tuple pairs)
    @cython.locals(heap=list, keep=list, f=dict)
    cpdef prune(self, boundary)
    cpdef index_facts(self)
    cpdef forget_ids(self, boundary)
    cpdef entity_key(self, e)
    cpdef new_facts(self, e)
    cpdef apply(self, e, ts, f)
    cpdef on_close(self, old, new)
    cpdef finish_window(self, w)

cdef class CallsSource(Source):
    cdef public object open_ids
    cpdef entity_key(self, e)
    cpdef new_facts(self, e)
    @cython.locals(w=OpenWindow)
    cpdef _level(self, f, level, ts, delta)
    cpdef _event_cell(self, e)
    @cython.locals(w=OpenWindow)
    cpdef apply(self, e, ts, f)
    cpdef _terminate(self, f, contact_id, ts)
    cpdef prune(self, boundary)
    cpdef on_close(self, old, new)

cdef class AgentsSource(Source):
    cdef public object levels, joined
    cdef public list expiry
    cdef public dict present
    cpdef entity_key(self, e)
    cpdef new_facts(self, e)
    @cython.locals(counts=dict)
    cpdef _count_present(self, state, tuple keys, delta)
    cpdef _group(self, f)
    cpdef _credit_group(self, group, start, end, n)
    cpdef _credit_levels(self, start, end)
    @cython.locals(w=OpenWindow)
    cpdef _credit_cells(self, cells, start, end)
    @cython.locals(w=OpenWindow)
    cpdef _credit_seconds(self, dict seconds)
    cpdef _add_seconds(self, p, name, reason, secs)
    cpdef _credit(self, f, start, end)
    cpdef _untrack(self, aid, group)
    cpdef _queue_dims(self, queues)
    cpdef apply(self, e, ts, f)
    @cython.locals(seconds=dict)
    cpdef on_close(self, old, new)
    @cython.locals(heap=list)
    cpdef _expire(self, old, new)
    cpdef _rebuild_expiry(self)

cdef class TicketsSource(Source):
    cpdef entity_key(self, e)
    cpdef new_facts(self, e)
    cpdef _event_cell(self, e)
    cpdef _backlog(self, f, OpenWindow w, ts, delta)
    @cython.locals(w=OpenWindow)
    cpdef apply(self, e, ts, f)

cdef class SurveysSource(Source):
    cpdef entity_key(self, e)
    @cython.locals(w=OpenWindow)
    cpdef apply(self, e, ts, f)
    cpdef _calls(self)
    cpdef emit_target(self)
    cpdef finish_window(self, w)

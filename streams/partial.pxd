# The percentile sketch as an extension type when compiled (an augmenting .pxd: partial.py stays
# plain Python). Its fields become struct fields and ``add`` a direct call where the sketch is
# typed; the values stay Python objects, so sums, minima and the JSON form are unchanged.

cimport cython

cdef class Sketch:
    cdef public dict bins
    cdef public object zero, count, sum, min, max
    cpdef add(self, value)
    cpdef merge(self, Sketch other)
    @cython.locals(c=Sketch)
    cpdef copy(self)
    cpdef to_state(self)

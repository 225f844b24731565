# The KPI formulas as direct C calls when compiled (an augmenting .pxd: kpis.py stays plain
# Python). A record calls ``ratio`` about 40 times and ``service_level`` once per variant and
# threshold (12 with the defaults): as Python calls of module functions they were a sixth of
# building a record. Arguments and results stay Python objects: the arithmetic is Python's.

cpdef ratio(num, den)
cpdef service_level(p, i, variant)
cpdef _percentiles(p, name)

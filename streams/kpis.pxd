# The KPI formulas as direct C calls when compiled (an augmenting .pxd: kpis.py stays plain
# Python). A record calls ``ratio`` about 50 times: as Python calls of module functions the
# formulas were a sixth of building a record. Arguments and results stay Python objects: the
# arithmetic is Python's.

cpdef ratio(num, den)
cpdef tuple _variant_values(a_x, ab_x, answered, abandoned, short, offered)
cpdef service_level(p, i, variant)
cpdef service_levels(p, thresholds)
cpdef _percentiles(p, name)

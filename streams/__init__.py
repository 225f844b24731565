"""The stream processing: pure KPI engine modules and the Faust application at the edge."""

from streams.compiled import install_finder

install_finder()  # the engine modules load compiled when built from their current source

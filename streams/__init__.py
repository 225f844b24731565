"""The stream processing: pure KPI engine modules and the Faust application at the edge."""

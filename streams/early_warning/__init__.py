"""Early warnings: threshold rules with hysteresis, seasonal surge/drop detection, the warning
lifecycle and the backtest. Pure logic, no I/O; the Faust worker feeds it final KPI windows."""

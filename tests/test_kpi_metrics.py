"""KPI gauges: bounded labels (a cap per dimension with an `other` bucket, never agents), live
values back to 0 when a queue empties, warnings exported while open only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from schemas.records import WarningLevel
from sinks.kpi_metrics import KpiGauges


def test_label_values_are_capped_with_an_other_bucket() -> None:
    g = KpiGauges(CollectorRegistry(), (20, 30), max_values=3)
    assert [g.label("queue", f"q{i}") for i in range(5)] == ["q0", "q1", "q2", "other", "other"]
    assert g.label("queue", "q1") == "q1"
    assert g.label("all", "") == "all"


def test_live_gauges_sum_the_other_bucket_and_drop_to_zero() -> None:
    reg = CollectorRegistry()
    g = KpiGauges(reg, (20, 30), max_values=1)
    g.update_live(
        {
            "queue\ta": {"waiting": 2, "in_progress": 3, "longest_wait_s": 40.0},
            "queue\tb": {"waiting": 1, "in_progress": 1, "longest_wait_s": 90.0},
            "queue\tc": {"waiting": 4, "in_progress": 4, "longest_wait_s": 10.0},
            "agent\tagent-7": {"waiting": 9, "in_progress": 9, "longest_wait_s": 1.0},
        }
    )
    text = generate_latest(reg).decode()
    assert 'callpulse_contacts_waiting{dimension="queue",value="other"} 5.0' in text
    assert 'callpulse_longest_current_wait_seconds{dimension="queue",value="other"} 90.0' in text
    assert "agent-7" not in text  # never an agent label
    g.update_live({})
    text = generate_latest(reg).decode()
    assert 'callpulse_contacts_waiting{dimension="queue",value="a"} 0.0' in text


def test_warning_series_exist_only_while_open() -> None:
    reg = CollectorRegistry()
    g = KpiGauges(reg, (20, 30))
    g.update_warnings({("service_level_collapse", "queue", "billing"): WarningLevel.red})
    text = generate_latest(reg).decode()
    assert (
        'callpulse_warning_active{dimension="queue",level="red",rule="service_level_collapse",value="billing"} 1.0'
        in text
    )
    assert 'callpulse_warning_level{dimension="queue",value="billing"} 3.0' in text
    g.update_warnings({})
    text = generate_latest(reg).decode()
    assert "callpulse_warning_active{" not in text
    assert 'callpulse_warning_level{dimension="queue",value="billing"} 0.0' in text

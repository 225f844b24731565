"""docker-compose.yml checked structurally (no Docker engine here to run it): every service of
the stack is there with a health check where it runs for long, every mounted file exists, every
CALLPULSE_* variable is a setting of the config object, and the ports and host names that
Prometheus, Alertmanager and Grafana use match the services."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel

from callpulse.config import Settings
from tests.services import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"CALLPULSE_{name.upper()}")
        nested = type(field.default)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names |= {f"CALLPULSE_{name.upper()}__{sub.upper()}" for sub in nested.model_fields}
    return names


def test_every_service_of_the_stack() -> None:
    assert set(SERVICES) == {
        "kafka", "clickhouse", "setup", "worker", "sink", "simulator", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name in ("kafka", "clickhouse", "worker", "sink", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["worker"]["deploy"]["replicas"] >= 2
    # a worker or sink exits when it cannot go on (streams/app.py, faust_settings): started again
    assert SERVICES["worker"]["restart"] == SERVICES["sink"]["restart"] == "unless-stopped"
    assert SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"] == "grafana-clickhouse-datasource"


def test_named_volumes_and_mounted_files_exist() -> None:
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_environment_names_are_settings() -> None:
    known = settings_env_names()
    for name, svc in SERVICES.items():
        env = svc.get("environment", {})
        for var in env:
            if var.startswith("CALLPULSE_") and name not in ("alertmanager",):
                assert var in known, f"{name}: {var} is not a CALLPULSE_* setting"
    env = SERVICES["worker"]["environment"]
    s = Settings(
        **{
            k.removeprefix("CALLPULSE_").lower(): v
            for k, v in env.items()
            if "__" not in k and k != "CALLPULSE_PII_KEY"
        }
    )
    assert s.metrics_port == 9464 and s.sink_metrics_port == 9465 and s.metrics_host == "0.0.0.0"


def test_prometheus_alertmanager_grafana_point_at_the_services() -> None:
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    env = SERVICES["worker"]["environment"]
    ports = {"worker": env["CALLPULSE_METRICS_PORT"], "sink": env["CALLPULSE_SINK_METRICS_PORT"]}
    for job in prom["scrape_configs"]:
        sd = job["dns_sd_configs"][0]
        (host,) = sd["names"]
        assert host in SERVICES and str(sd["port"]) == ports[host]
    (am,) = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am.split(":")[0] in SERVICES
    for rule_file in prom["rule_files"]:
        assert (REPO / "deploy/prometheus" / rule_file).exists()
    # the placeholders compose replaces are those of alertmanager.yml
    am_text = (REPO / "deploy/alertmanager/alertmanager.yml").read_text()
    entry = " ".join(SERVICES["alertmanager"]["entrypoint"])
    for placeholder in re.findall(r"s#(http://[^#]+)#", entry):
        assert placeholder in am_text
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/callpulse.yml").read_text())["datasources"]
    by_uid = {d["uid"]: d for d in ds}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["clickhouse"]["jsonData"]["host"] in SERVICES


def test_image_contains_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("callpulse", "schemas", "streams", "sinks"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_the_images_user_owns_the_data_dir() -> None:
    """Faust makes its app folders under ``CALLPULSE_DATA_DIR`` at start-up: in the image the
    data dir must be one the unprivileged user can write (``/app`` is root's; the worker and the
    sink could not start there)."""
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    user = lines.index("USER nobody")
    env = next(line for line in lines[:user] if line.startswith("ENV CALLPULSE_DATA_DIR="))
    data_dir = env.split("=", 1)[1]
    assert data_dir.startswith("/") and not data_dir.startswith("/app")
    assert f"RUN mkdir -p {data_dir} && chown nobody {data_dir}" in lines[:user]

"""JSON Schema export of every contract, for producers written in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.events import AgentStateEvent, CallEvent, SurveyEvent, TicketEvent
from schemas.records import KpiRecord, WarningRecord

EXPORTED: dict[str, type[BaseModel]] = {
    "cc.calls": CallEvent,
    "cc.tickets": TicketEvent,
    "cc.surveys": SurveyEvent,
    "cc.agents": AgentStateEvent,
    "cc.kpis": KpiRecord,
    "cc.warnings": WarningRecord,
}


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, model in EXPORTED.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://callpulse.dev/schemas/{topic}.v1.json"
        schema["x-topic"] = topic
        path = directory / f"{topic}.v1.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written

"""The hand-written OpenAPI document lists exactly the app's routes, and is valid."""

from __future__ import annotations

import json
from pathlib import Path

from keepwarm.http import HttpApp
from keepwarm.http.app import OPENAPI
from keepwarm.repository import Repository
from keepwarm.service import InferenceService


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    service = InferenceService(Repository(tmp_path))
    try:
        app = HttpApp(service, max_body_bytes=1024, max_json_depth=64)
        routes = {(route.pattern, route.method.lower()) for route in app.router.routes}
    finally:
        service.close()
    document = json.loads(OPENAPI.read_text())
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "openapi.json documents routes that do not exist"


def test_the_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(json.loads(OPENAPI.read_text()))

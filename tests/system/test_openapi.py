"""The OpenAPI document is true: schemathesis against the live service, through Apache.

Generated requests (valid and invalid parameters, bodies, methods) must get no 5xx and no
answer whose status, content type or body the document does not describe.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_files):
    s = Stack(tmp_path_factory.mktemp("openapi"), {**tiny_model_files, "KEY_PREFIX": "openapi", "REQUEST_TIMEOUT": 5})
    try:
        s.start()
        yield s
    finally:
        s.stop()


def operations(url: str):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_the_live_service_matches_its_openapi_document(stack):
    checked = []
    for operation in operations(stack.url):

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            # Random bytes are a valid "binary" by the schema but not a decodable image, so a
            # valid request by the schema may rightly be refused 400: that check does not apply.
            case.call_and_validate(base_url=stack.url, excluded_checks=[positive_data_acceptance])

        conforms()
        checked.append(operation.label)
    assert "POST /predict" in checked and "GET /result/{job_id}" in checked
    assert "POST /v2/models/{model_name}/infer" in checked and "POST /v2/repository/index" in checked

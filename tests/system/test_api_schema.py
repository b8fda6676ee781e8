"""Schemathesis drives every operation of /api/schema/ against a live server.

It must find no server error and no response that breaks the published schema. The staff
APIs are exercised with a staff user's HTTP Basic credentials, the tracking API with a write
key, so the generated requests reach the code behind authentication too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from commerce.models import WriteKey
from tests.support.processes import asgi_server, child_env

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]

CHECKS = "not_a_server_error,response_schema_conformance"
TRACKING_PATHS = r"^/(api/)?v1/"


def _schemathesis(
    base_url: str, auth: str, *filters: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{base_url}/api/schema/",
        "--url",
        base_url,
        "--checks",
        CHECKS,
        "--auth",
        auth,
        # The coverage phase (boundary values for every parameter) alone ran past ten minutes
        # on two cores for this schema; examples plus fuzzing fit the suite's budget.
        "--max-examples",
        "10",
        "--seed",
        "20261122",
        "--generation-database",
        "none",
        "--phases",
        "examples,fuzzing",
        "--request-timeout",
        "30",
        "--workers",
        "2",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *filters,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path):
    password = "schema-fuzz-pass-1"
    get_user_model().objects.create_superuser("fuzzer", "fuzzer@example.com", password)
    key = WriteKey.objects.create(name="fuzz").key

    with asgi_server(env=child_env(DEBUG="1")) as base_url:
        staff = _schemathesis(
            base_url,
            f"fuzzer:{password}",
            "--exclude-path-regex",
            TRACKING_PATHS,
            tmp_path=tmp_path / "staff",
        )
        tracking = _schemathesis(
            base_url,
            f"{key}:",
            "--include-path-regex",
            TRACKING_PATHS,
            tmp_path=tmp_path / "tracking",
        )

    assert staff.returncode == 0, staff.stdout[-8000:] + staff.stderr[-2000:]
    assert tracking.returncode == 0, tracking.stdout[-8000:] + tracking.stderr[-2000:]
    # The runs really exercised operations (a filter that matched nothing would also "pass").
    assert "passed" in staff.stdout.lower()
    assert "passed" in tracking.stdout.lower()

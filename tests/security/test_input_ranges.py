"""Every value a client sends is range-checked: forged cursors, query values and bodies are
a 422 with the JSON error body, never a 500 and never a command."""

import pytest

from facilities.access import Role
from tests.api_support import Api, bearer
from tests.support.db import query

BIG = str(2**63)  # one past SQLite's INTEGER
HUGE = "9" * 40

# (path, the forged or out-of-range query). Before: each forged cursor answered 500.
FORGED = [
    ("/api/alerts", f"cursor={BIG}"),
    ("/api/alerts", f"cursor=-{HUGE}"),
    ("/api/audit", f"cursor=1.0,request,{BIG}"),
    ("/api/audit", "cursor=nan,request,1"),
    ("/api/audit", "cursor=1e999,command,1"),
    ("/api/audit", "cursor=1.0,anything,1"),
    ("/api/stations/cs-01/sessions", f"cursor={HUGE}"),
    ("/api/stations/cs-01/telemetry", f"cursor=1.0,{BIG}"),
    ("/api/stations/cs-01/telemetry", "cursor=inf,1"),
    ("/api/stations/cs-01/telemetry", "cursor=nan,1"),
    ("/api/stations/cs-01/telemetry", "step=60&cursor=inf,1"),
    ("/api/stations/cs-01/telemetry", "step=60&cursor=nan,1"),
    ("/api/stations/cs-01/telemetry", f"step=60&cursor=1e300,{BIG}"),
    ("/api/stations/cs-01/telemetry", "step=nan"),
    ("/api/stations/cs-01/telemetry", "step=inf"),
    ("/api/stations/cs-01/telemetry", "step=0.5"),
    ("/api/stations/cs-01/telemetry", f"port={BIG}"),
    ("/api/stations/cs-01/telemetry", "from=0001-01-01T00:00:00%2B14:00"),
    ("/api/stations/cs-01/telemetry", "to=9999-12-31T23:59:59-23:59"),
    ("/api/stations/cs-01/telemetry", f"from={HUGE}"),
    ("/api/stations/cs-01/sessions", "from=9999-12-31T23:59:59.999999-23:59"),
    ("/api/alerts", "since=0001-01-01T00:00:00%2B23:59"),
    ("/api/alerts", f"limit={BIG}"),
    ("/api/alerts", "limit=0"),
    ("/api/audit", "since=nan"),
    ("/api/audit", "since=0.5"),  # before: read as Unix seconds, not the ISO 8601 documented
    ("/api/alerts", "since=1764400301000"),
]


@pytest.mark.parametrize(("path", "params"), FORGED)
async def test_forged_query_values_are_422(api: Api, path: str, params: str) -> None:
    staff = (await api.person(Role.STAFF, "物业"))[1]
    response = await api.http.get(f"{path}?{params}", headers=bearer(staff))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"on": "yes"},  # before: 200 and a power_on, lax bool parsing
        {"on": "true"},
        {"on": 1},
        {"on": 1.0},
        {"on": None},
        {"on": True, "extra": 1},
        {},
        [],
        "on",
    ],
)
async def test_power_bodies_are_strict(api: Api, body: object) -> None:
    staff = (await api.person(Role.STAFF, "物业"))[1]
    response = await api.http.post(
        "/api/stations/cs-01/ports/1/power", json=body, headers=bearer(staff)
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert query(api.service.settings.db, "SELECT count(*) FROM commands") == [(0,)]

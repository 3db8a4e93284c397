"""Staff list the quarantine by device and reason, paged (docs/api.md, "Quarantine"): the real
app over the real service, fed through the real broker."""

import base64
import json

from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from facilities.mqtt.session import BrokerUrl
from simulators.client import DeviceClient
from tests.api_support import Api, bearer
from tests.support.devices import DeviceFactory
from tests.support.payloads import telemetry
from tests.support.poll import wait_for

TELEMETRY = "facilities/charging/{}/telemetry"
TOO_LARGE = json.dumps({"seq": 3, "ts": 1.0, "note": "x" * 70_000}).encode()


async def _quarantine_some(api: Api, device: DeviceFactory, broker: PrivateBroker) -> None:
    """cs-01: malformed JSON, two schema mismatches, one oversized; cs-02: a schema mismatch;
    a rogue client: a station the site file does not know."""
    cs01, cs02 = device("cs-01"), device("cs-02")
    for topic, payload in [
        (TELEMETRY.format("cs-01"), b'{"seq": 1, "ts": '),
        (TELEMETRY.format("cs-01"), b'{"seq": 1, "ts": "a"}'),
        (TELEMETRY.format("cs-01"), b'{"seq": 2, "ts": "b"}'),
        (TELEMETRY.format("cs-01"), TOO_LARGE),
    ]:
        cs01.publish_raw(topic, payload).wait_for_publish(5)
    cs02.publish_raw(TELEMETRY.format("cs-02"), b'{"seq": 1}').wait_for_publish(5)
    rogue_user = broker.new_user_like("rogue")
    rogue = DeviceClient(BrokerUrl.parse(broker.url(rogue_user)), client_id=rogue_user).connect()
    try:
        unknown = json.dumps(telemetry(1)).encode()
        rogue.publish_raw(TELEMETRY.format("cs-99"), unknown).wait_for_publish(5)
    finally:
        rogue.close()
    await wait_for(lambda: api.service.ingest.quarantined == 6, what="6 quarantined")


async def _all_pages(api: Api, token: str, path: str) -> tuple[list[dict[str, object]], int]:
    """Every item of a list, following `next`; and how many pages it took."""
    items: list[dict[str, object]] = []
    pages = 0
    next_path: str | None = path
    while next_path is not None:
        response = await api.http.get(next_path, headers=bearer(token))
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        next_path = body["next"]
        pages += 1
    return items, pages


async def test_staff_list_the_quarantine_by_device_and_reason_in_pages(
    api: Api, device: DeviceFactory, broker: PrivateBroker
) -> None:
    await _quarantine_some(api, device, broker)
    _sid, staff = await api.person(Role.STAFF, "物业 陈经理")

    everything, _ = await _all_pages(api, staff, "/api/quarantine")
    assert len(everything) == 6
    times = [str(item["received_at"]) for item in everything]
    assert times == sorted(times, reverse=True)  # newest first
    # the same, a page of one at a time
    paged, pages = await _all_pages(api, staff, "/api/quarantine?limit=1")
    assert paged == everything
    assert pages == 7  # six full pages, then an empty last one

    cs01, _ = await _all_pages(api, staff, "/api/quarantine?device=cs-01")
    assert sorted(str(item["reason"]) for item in cs01) == [
        "malformed_json",
        "schema_mismatch",
        "schema_mismatch",
        "too_large",
    ]
    assert {item["device"] for item in cs01} == {"cs-01"}
    mismatches, pages = await _all_pages(
        api, staff, "/api/quarantine?device=cs-01&reason=schema_mismatch&limit=1"
    )
    assert [item["payload"] for item in mismatches] == [
        '{"seq": 2, "ts": "b"}',
        '{"seq": 1, "ts": "a"}',
    ]
    assert pages == 3
    # a message from no device of the site file has no device
    unknown, _ = await _all_pages(api, staff, "/api/quarantine?reason=unknown_device")
    assert [(item["device"], item["topic"]) for item in unknown] == [
        (None, TELEMETRY.format("cs-99"))
    ]
    assert (await _all_pages(api, staff, "/api/quarantine?device=cs-03"))[0] == []

    [large] = [item for item in cs01 if item["reason"] == "too_large"]
    assert (large["size"], large["truncated"]) == (len(TOO_LARGE), True)
    kept = base64.b64decode(str(large["payload_base64"]))
    assert kept == TOO_LARGE[:1024]
    assert large["payload"] == kept.decode()
    [malformed] = [item for item in cs01 if item["reason"] == "malformed_json"]
    assert (malformed["size"], malformed["truncated"]) == (17, False)
    assert malformed["detail"]


async def test_the_quarantine_is_for_staff_only_and_refuses_bad_queries(api: Api) -> None:
    _rid, resident = await api.person(Role.RESIDENT, "王阿姨", "g-cq4")
    _sid, staff = await api.person(Role.STAFF, "s")
    assert (await api.http.get("/api/quarantine")).status_code == 401
    forbidden = await api.http.get("/api/quarantine", headers=bearer(resident))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "forbidden", "detail": "staff only"}
    for query in (
        "reason=bad_vibes",
        "device=CS_01",
        f"device={'a' * 33}",
        "limit=0",
        "limit=5001",
        "cursor=nonsense",
        "cursor=1e300,1",
        f"cursor=1.0,{2**63}",
    ):
        response = await api.http.get(f"/api/quarantine?{query}", headers=bearer(staff))
        assert response.status_code == 422, (query, response.text)
        assert response.json()["error"]

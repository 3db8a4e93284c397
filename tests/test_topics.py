"""Topics are built where they are parsed (facilities/mqtt/topics.py): every device topic
built parses back to its route, and the service's own topics are those of the docs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facilities.broker_config import service_acl
from facilities.messages import MessageKind, Route
from facilities.mqtt.topics import Topics
from facilities.rule_ids import RuleId

GATE_KINDS = {MessageKind.GATE_EVENT, MessageKind.GATE_COMMAND, MessageKind.GATE_ACK}
IDS = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)


@given(
    kind=st.sampled_from(MessageKind),
    device=IDS,
    gate=IDS,
    prefix=st.sampled_from(["facilities", "site-b"]),
)
def test_every_device_topic_parses_back_to_its_route(
    kind: MessageKind, device: str, gate: str, prefix: str
) -> None:
    route = Route(kind, device, gate if kind in GATE_KINDS else None)
    topics = Topics(prefix)
    built = topics.of(route)
    assert built.startswith(f"{prefix}/")
    assert topics.parse(built) == route


def test_a_gate_topic_needs_its_gate() -> None:
    with pytest.raises(ValueError, match="gate"):
        Topics().of(Route(MessageKind.GATE_COMMAND, "g-cq4"))


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        # the examples of docs/protocol.md and docs/rules.md
        (
            Topics().of(Route(MessageKind.STATION_ACK, "cs-07")),
            "facilities/charging/cs-07/command/ack",
        ),
        (
            Topics().of(Route(MessageKind.GATE_EVENT, "g-hc3", "north")),
            "facilities/garage/g-hc3/gate/north/event",
        ),
        (
            Topics().alert(RuleId.PORT_OVERLOAD, "cs-07/3"),
            "facilities/alerts/port_overload/cs-07/3",
        ),
        (Topics().service_status(), "facilities/service/status"),
        # docs/protocol.md, "Telling a device what was refused": a gate's go to its garage
        (
            Topics().rejected(Route(MessageKind.STATION_TELEMETRY, "cs-07")),
            "facilities/charging/cs-07/rejected",
        ),
        (
            Topics().rejected(Route(MessageKind.GATE_EVENT, "g-hc3", "north")),
            "facilities/garage/g-hc3/rejected",
        ),
        (Topics("x").all_alerts(), "x/alerts/#"),
        (Topics("x").all_service(), "x/service/#"),
        (Topics("x").everything(), "x/#"),
    ],
)
def test_the_service_topics_are_the_documented_ones(built: str, expected: str) -> None:
    assert built == expected


def test_the_service_may_write_its_alerts_and_status_and_only_read_the_rest() -> None:
    acl = service_acl(Topics("x"))
    assert acl == (
        "topic read x/#",
        "topic write x/charging/+/command",
        "topic write x/garage/+/gate/+/command",
        "topic write x/charging/+/rejected",
        "topic write x/garage/+/rejected",
        "topic write x/service/#",
        "topic write x/alerts/#",
    )

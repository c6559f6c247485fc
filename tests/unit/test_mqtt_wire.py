"""The lean subscriber's MQTT 5 codec: packets built to the spec, streams cut anywhere."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.mqtt_subscriber import (
    Inbound,
    ProtocolError,
    _Connection,
    _varint,
    connect_packet,
    puback_packets,
    read_properties,
    subscribe_packet,
)


def publish(topic: str, payload: bytes, *, packet_id: int = 0, properties: bytes = b"") -> bytes:
    qos = 1 if packet_id else 0
    body = struct.pack(">H", len(topic.encode())) + topic.encode()
    if qos:
        body += struct.pack(">H", packet_id)
    body += _varint(len(properties)) + properties + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


class _Owner:
    def __init__(self) -> None:
        self.received: list[Inbound] = []
        self.keepalive_s = 30
        self.receive_maximum = 65_535
        self.current: object = None
        self.connect_packet = b""
        self.subscribe_packet = b""

    def on_messages(self, messages: list[Inbound]) -> None:
        self.received.extend(messages)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.aborted = True


def accepted_connection(receive_maximum: int = 65_535) -> tuple[_Connection, _Owner, _Transport]:
    """A connection past its CONNACK, as the network thread would hold it."""

    async def make() -> _Connection:
        return _Connection(owner, generation=7)  # type: ignore[arg-type]

    owner = _Owner()
    owner.receive_maximum = receive_maximum
    connection = asyncio.run(make())
    transport = _Transport()
    connection.transport = transport  # type: ignore[assignment]
    connection.data_received(b"\x20\x03\x00\x00\x00")  # CONNACK: accepted, no properties
    assert transport.written == [b""]  # the (empty) SUBSCRIBE went out
    return connection, owner, transport


def test_varint_matches_the_spec_examples() -> None:
    assert _varint(0) == b"\x00"
    assert _varint(127) == b"\x7f"
    assert _varint(128) == b"\x80\x01"
    assert _varint(16_383) == b"\xff\x7f"
    assert _varint(2_097_152) == b"\x80\x80\x80\x01"


def test_connect_carries_session_credentials_and_receive_maximum() -> None:
    packet = connect_packet("ing-1", keepalive_s=30, clean_start=False, session_expiry_s=86_400,
                            receive_maximum=4000, username="u", password="p")  # fmt: skip
    assert packet[0] == 0x10
    body = packet[2:]
    assert packet[1] == len(body)
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC0  # username + password, no clean start
    assert body[8:10] == struct.pack(">H", 30)
    properties, at = read_properties(body, 10)
    assert properties == {0x21: 4000, 0x11: 86_400}
    assert body[at:] == b"\x00\x05ing-1\x00\x01u\x00\x01p"


def test_subscribe_asks_qos_1_for_each_filter() -> None:
    packet = subscribe_packet(["$share/g/a/+", "b/#"])
    assert packet[0] == 0x82
    assert packet[2:] == b"\x00\x01\x00" + b"\x00\x0c$share/g/a/+\x01" + b"\x00\x03b/#\x01"


def test_pubacks_leave_as_one_buffer() -> None:
    assert puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.data())
def test_publishes_split_anywhere_arrive_whole_and_in_order(
    payloads: list[bytes], data: st.DataObject
) -> None:
    connection, owner, _ = accepted_connection()
    stream = b"".join(
        publish(
            f"ev/v1/s/m-{i}/measurement",
            p,
            packet_id=i + 1,
            properties=b"\x01\x01" if i % 2 else b"",
        )
        for i, p in enumerate(payloads)
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=10)))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        connection.data_received(stream[start:end])
    assert [m.payload for m in owner.received] == payloads
    assert [m.packet_id for m in owner.received] == list(range(1, len(payloads) + 1))
    assert {m.generation for m in owner.received} == {7}
    assert owner.received[0].topic == "ev/v1/s/m-0/measurement"
    assert connection.buffer == b""


def test_no_more_than_receive_maximum_unacknowledged_whatever_the_broker_sends() -> None:
    connection, owner, transport = accepted_connection(receive_maximum=2)
    connection.data_received(b"".join(publish("a/b", b"%d" % i, packet_id=i) for i in range(1, 6)))
    assert [m.packet_id for m in owner.received] == [1, 2]
    assert not transport.reading  # TCP pushes back on the broker
    connection.acknowledge([1])
    assert [m.packet_id for m in owner.received] == [1, 2, 3]
    assert not transport.reading
    connection.acknowledge([2, 3])
    assert [m.packet_id for m in owner.received] == [1, 2, 3, 4, 5]
    assert transport.written[-1] == puback_packets([2, 3])
    assert not transport.reading  # 4 and 5 fill the quota again
    connection.acknowledge([4, 5])
    assert transport.reading


def test_qos_0_messages_carry_no_packet_id() -> None:
    connection, owner, _ = accepted_connection()
    connection.data_received(publish("a/b", b"x"))
    assert [(m.qos, m.packet_id, m.payload) for m in owner.received] == [(0, 0, b"x")]


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x34\x05\x00\x01a\x00\x01", "QoS 2"),
        (b"\xe0\x01\x8e", "0x8e"),  # server DISCONNECT: session taken over
        (b"\x50\x02\x00\x01", "unexpected packet type 5"),
        (b"\x30\xff\xff\xff\xff\x01", "malformed"),
    ],
)
def test_protocol_violations_drop_the_connection(
    packet: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection, owner, transport = accepted_connection()
    connection.data_received(packet)
    assert transport.aborted
    assert owner.received == []
    assert reason in caplog.text


def test_refused_connack_drops_the_connection() -> None:
    async def make() -> _Connection:
        return _Connection(_Owner(), generation=1)  # type: ignore[arg-type]

    connection = asyncio.run(make())
    transport = _Transport()
    connection.transport = transport  # type: ignore[assignment]
    connection.data_received(b"\x20\x03\x00\x87\x00")  # not authorized
    assert transport.aborted
    assert not connection.accepting


def test_unknown_property_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown property"):
        read_properties(b"\x02\x7f\x00", 0)

"""A lean MQTT 5 subscriber for high-rate QoS 1 streams, acknowledging only when told to.

paho handles one packet per several Python calls and one syscall per PUBACK, which capped the
ingestor at a quarter of what the broker can deliver. This client speaks only what a consumer
needs (CONNECT, SUBSCRIBE, PUBLISH in, PUBACK out, PING, DISCONNECT) on an asyncio transport:
each read parses every complete packet in the buffer and hands them over in one call, and
the acknowledgements of a committed batch leave in one write.

Packet ids are per connection, so every message carries the generation of the connection it
came on, and an acknowledgement for an older generation is dropped: the broker redelivers
those messages on the new connection (persistent session) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.mqtt import MqttSettings

log = logging.getLogger(__name__)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 8, 9, 12, 13, 14
_PINGREQ_PACKET = b"\xc0\x00"
_DISCONNECT_PACKET = b"\xe0\x00"  # normal disconnection: the session (and its queue) is kept
_SUBSCRIBE_ID = 1


class ProtocolError(Exception):
    """The broker sent something this client cannot accept; the connection is dropped."""


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    packet_id: int
    generation: int
    received_at: float  # time.time() when the read that carried it completed


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when the buffer ends inside the integer."""
    value = shift = 0
    for i in range(pos, min(pos + 4, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    if len(buf) >= pos + 4:
        raise ProtocolError("malformed variable byte integer")
    return None


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
    username: str | None,
    password: str | None,
) -> bytes:
    flags = 0x02 if clean_start else 0
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    properties = b"\x21" + struct.pack(">H", receive_maximum)
    if session_expiry_s:
        properties += b"\x11" + struct.pack(">I", session_expiry_s)
    header = _string("MQTT") + bytes([5, flags]) + struct.pack(">H", keepalive_s)
    return _packet(_CONNECT << 4, header + _varint(len(properties)) + properties + payload)


def subscribe_packet(topics: Sequence[str]) -> bytes:
    body = struct.pack(">H", _SUBSCRIBE_ID) + b"\x00"
    for topic in topics:
        body += _string(topic) + b"\x01"  # QoS 1
    return _packet((_SUBSCRIBE << 4) | 0x02, body)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """One PUBACK (success, no properties) per id, as one buffer."""
    return struct.pack(f">{len(packet_ids)}I", *(0x40020000 | pid for pid in packet_ids))


# MQTT 5 property identifiers -> size of their value (negative: a length-prefixed field).
_FIXED = {0x01: 1, 0x02: 4, 0x11: 4, 0x13: 2, 0x17: 1, 0x19: 1, 0x21: 2, 0x22: 2, 0x23: 2,
          0x24: 1, 0x25: 1, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1}  # fmt: skip
_STRINGS = {0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}


def read_properties(buf: bytes | bytearray, pos: int) -> tuple[dict[int, object], int]:
    """The property block at ``pos`` (length first) -> ({id: value}, position after it)."""
    header = _read_varint(buf, pos)
    if header is None:
        raise ProtocolError("truncated properties")
    length, pos = header
    end = pos + length
    found: dict[int, object] = {}
    while pos < end:
        ident = buf[pos]
        pos += 1
        if ident in _FIXED:
            size = _FIXED[ident]
            found[ident] = int.from_bytes(buf[pos : pos + size], "big")
            pos += size
        elif ident in _STRINGS:
            size = int.from_bytes(buf[pos : pos + 2], "big")
            found[ident] = bytes(buf[pos + 2 : pos + 2 + size]).decode(errors="replace")
            pos += 2 + size
        elif ident == 0x26:  # user property: a string pair
            for _ in range(2):
                pos += 2 + int.from_bytes(buf[pos : pos + 2], "big")
        elif ident == 0x0B:  # subscription identifier
            sub = _read_varint(buf, pos)
            if sub is None:
                raise ProtocolError("truncated subscription identifier")
            found[ident], pos = sub
        else:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
    if pos != end:
        raise ProtocolError("property block overruns its length")
    return found, end


class _Connection(asyncio.Protocol):
    """One network connection: handshake, then packets in, acknowledgements out."""

    def __init__(self, owner: BulkSubscriber, generation: int) -> None:
        self.owner = owner
        self.generation = generation
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.unacked = 0
        self.paused = False
        self.accepting = False  # from CONNACK: a resumed session's queue comes before SUBACK
        self.ready = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_read = time.monotonic()
        self.topics: dict[bytes, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.owner.connect_packet)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def drop(self, reason: str) -> None:
        log.warning("dropping the broker connection: %s", reason)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        self.buffer += data
        self.deliver()

    def deliver(self) -> None:
        """Hand over the complete packets in the buffer, up to the unacknowledged quota.

        Brokers do not all hold to the Receive Maximum (Mosquitto 2.0 sends more after
        acknowledgements), so the quota is kept here too: past it, reading pauses, which
        pushes back through TCP, and resumes as acknowledgements leave.
        """
        try:
            consumed, messages = self._parse(self.buffer)
        except ProtocolError as exc:
            self.drop(str(exc))
            return
        del self.buffer[:consumed]
        if messages:
            self.unacked += sum(1 for m in messages if m.qos)
            self.owner.on_messages(messages)
        assert self.transport is not None
        blocked = self.unacked >= self.owner.receive_maximum
        if blocked and not self.paused:
            self.transport.pause_reading()
        elif self.paused and not blocked:
            self.transport.resume_reading()
        self.paused = blocked

    def acknowledge(self, packet_ids: list[int]) -> None:
        assert self.transport is not None
        self.transport.write(puback_packets(packet_ids))
        self.unacked -= len(packet_ids)
        if self.paused:
            self.deliver()

    def _parse(self, buf: bytearray) -> tuple[int, list[Inbound]]:
        """Every complete packet in ``buf``: (bytes consumed, messages)."""
        messages: list[Inbound] = []
        now = time.time()
        generation, topics = self.generation, self.topics
        pos, size = 0, len(buf)
        quota = self.owner.receive_maximum - self.unacked
        while size - pos >= 2 and quota > 0:
            header = _read_varint(buf, pos + 1)
            if header is None:
                break
            length, start = header
            end = start + length
            if end > size:
                break
            first = buf[pos]
            kind = first >> 4
            if kind == _PUBLISH and self.accepting:
                qos = (first >> 1) & 0x03
                topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                raw_topic = bytes(buf[start + 2 : topic_end])
                topic = topics.get(raw_topic)
                if topic is None:
                    topic = topics[raw_topic] = raw_topic.decode()
                at = topic_end
                packet_id = 0
                if qos:
                    if qos > 1:
                        raise ProtocolError("QoS 2 delivery on a QoS 1 subscription")
                    packet_id = (buf[at] << 8) | buf[at + 1]
                    at += 2
                    quota -= 1
                if buf[at] == 0:  # no properties: the common case
                    at += 1
                else:
                    _, at = read_properties(buf, at)
                messages.append(Inbound(topic, bytes(buf[at:end]), qos, packet_id, generation, now))
            else:
                self._control(kind, buf[start:end])
            pos = end
        return pos, messages

    def _control(self, kind: int, body: bytearray) -> None:
        if kind == _CONNACK:
            code = body[1]
            if code >= 0x80:
                raise ProtocolError(f"broker refused the connection (reason 0x{code:02x})")
            properties, _ = read_properties(body, 2)
            keepalive = properties.get(0x13)
            if isinstance(keepalive, int) and keepalive:
                self.owner.keepalive_s = keepalive
            assert self.transport is not None
            self.accepting = True
            self.owner.current = self
            self.transport.write(self.owner.subscribe_packet)
        elif kind == _SUBACK:
            _, at = read_properties(body, 2)
            refused = [code for code in body[at:] if code >= 0x80]
            if refused:
                raise ProtocolError(f"subscription refused (reason 0x{refused[0]:02x})")
            self.ready = True
            self.owner.connected()
        elif kind == _DISCONNECT:
            code = body[0] if body else 0
            raise ProtocolError(f"broker disconnected us (reason 0x{code:02x})")
        elif kind == _PUBLISH:
            raise ProtocolError("message before the connection was accepted")
        elif kind != _PINGRESP:
            raise ProtocolError(f"unexpected packet type {kind}")


class BulkSubscriber:
    """Subscribes (QoS 1) and hands messages over in batches; reconnects with backoff.

    ``on_messages`` and ``on_connected`` run on the subscriber's network thread and must be
    quick; ``ack`` may be called from any thread.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        topics: Sequence[str],
        on_messages: Callable[[list[Inbound]], None],
        on_connected: Callable[[bool], None],
        clean_start: bool,
        session_expiry_s: int,
        receive_maximum: int,
    ) -> None:
        self.settings = settings
        self.on_messages = on_messages
        self.on_connected = on_connected
        self.keepalive_s = settings.keepalive_s
        self.receive_maximum = receive_maximum
        password = settings.password.get_secret_value() if settings.password else None
        self.connect_packet = connect_packet(
            client_id,
            keepalive_s=settings.keepalive_s,
            clean_start=clean_start,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            username=settings.username,
            password=password,
        )
        self.subscribe_packet = subscribe_packet(topics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.current: _Connection | None = None
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="mqtt-in", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result()

    async def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect normally (the broker keeps the session) and stop the network thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(TimeoutError):
                asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=timeout_s)
        if not thread.is_alive():
            loop.close()

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ack(self, messages: Sequence[Inbound]) -> None:
        if self._loop is not None and any(m.qos for m in messages):
            self._loop.call_soon_threadsafe(self._send_acks, messages)

    def _send_acks(self, messages: Sequence[Inbound]) -> None:
        current = self.current
        if current is None or current.transport is None:
            return
        # Messages of an earlier connection are left: the broker redelivers them.
        generation = current.generation
        ids = [m.packet_id for m in messages if m.qos and m.generation == generation]
        if ids:
            current.acknowledge(ids)

    def connected(self) -> None:
        log.info("connected to %s:%d", self.settings.host, self.settings.port)
        self.on_connected(True)

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_ca is None:
            return None
        context = ssl.create_default_context(cafile=str(s.tls_ca))
        if s.tls_cert is not None:
            context.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
        context.check_hostname = not s.tls_insecure
        return context

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 1.0
        tls = self._tls()
        while True:
            self._generation += 1
            generation = self._generation
            try:
                _, connection = await loop.create_connection(
                    functools.partial(_Connection, self, generation),
                    self.settings.host,
                    self.settings.port,
                    ssl=tls,
                )
            except OSError as exc:
                log.warning("cannot reach the broker (%s); retrying in %.0f s", exc, delay)
            else:
                try:
                    await self._serve(connection)
                finally:
                    was_ready = connection.ready
                    self.current = None
                    if was_ready:
                        self.on_connected(False)
                        delay = 1.0
                if was_ready:
                    log.warning("disconnected from the broker; reconnecting")
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
            delay = min(delay * 2, 30.0)

    async def _serve(self, connection: _Connection) -> None:
        """Keep the connection alive until it closes; on cancel, disconnect normally."""
        try:
            while not connection.closed.done():
                interval = self.keepalive_s / 2
                await asyncio.wait({connection.closed}, timeout=interval)
                if connection.closed.done() or connection.transport is None:
                    break
                silent = time.monotonic() - connection.last_read > 1.5 * self.keepalive_s
                if silent and not connection.paused:  # paused, the broker's answers wait
                    connection.drop("no answer from the broker within 1.5 keepalives")
                    break
                connection.transport.write(_PINGREQ_PACKET)
        except asyncio.CancelledError:
            if connection.transport is not None and not connection.transport.is_closing():
                connection.transport.write(_DISCONNECT_PACKET)
                connection.transport.close()
                await asyncio.wait({connection.closed}, timeout=2)
            raise

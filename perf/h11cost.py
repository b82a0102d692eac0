"""What h11 cost caslb per proxied request, beside caslb's own codec and the least a parser does.

    python -m perf.h11cost [--requests N]

The first figure replays, on in-memory bytes, exactly the h11 calls the L7
data path makes for one small keep-alive exchange: the server-side
`Connection` receives a request head and yields Request and EndOfMessage,
the client-side one sends the forwarded head, receives a 100-byte response
and yields Response, Data and EndOfMessage, the server side sends those
three back, and both start their next cycle. The second parses the same two
heads the way a replacement codec would have to at the least: find the blank
line, match the start line with one regex, take every field with one
`findall` and lowercase the names, and write the two heads back with one
join each. The difference is the most a parser of caslb's own could save;
the strictness h11 has and caslb's checks add to the second. The third
replays the same exchange through lb.l7.wire, the codec the data path now
uses in h11's place (its strictness included).

CPU time is `time.process_time` over N exchanges, the best of three; it moves
with the machine's load, so read the two figures against each other.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable

import h11

from lb.l7.wire.connection import WireConnection, send_all
from lb.l7.wire.events import EndOfMessage, Request

REQUEST = (b"GET /owa/bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\n\r\n")
BODY = b"x" * 100
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n"
            b"cache-control: no-cache\r\n\r\n" + BODY)
_FORWARDED = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*"),
              (b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-proto", b"http"),
              (b"x-forwarded-host", b"127.0.0.1:8080")]


def h11_exchanges(count: int) -> None:
    """`count` exchanges through one server and one client h11 Connection."""
    server, client = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
    for _ in range(count):
        server.receive_data(REQUEST)
        request = server.next_event()
        end = server.next_event()
        assert isinstance(request, h11.Request) and isinstance(end, h11.EndOfMessage)
        head = h11.Request(method=request.method, target=request.target,
                           headers=_FORWARDED, _parsed=True)
        client.send(head)
        client.send(h11.EndOfMessage())
        client.receive_data(RESPONSE)
        events = [client.next_event(), client.next_event(), client.next_event()]
        out = [server.send_with_data_passthrough(e) for e in events]  # type: ignore[arg-type]
        assert out
        server.start_next_cycle()
        client.start_next_cycle()


def wire_exchanges(count: int) -> None:
    """`count` exchanges through one server and one client lb.l7.wire connection."""
    server, client = WireConnection(server=True), WireConnection(server=False)
    forwarded = list(_FORWARDED)
    for _ in range(count):
        server.receive_data(REQUEST)
        request = server.next_event()
        end = server.next_event()
        assert isinstance(request, Request) and isinstance(end, EndOfMessage)
        head = Request(request.method, request.target, forwarded, length=request.length)
        sent = send_all(client, (head, end))
        assert sent
        client.receive_data(RESPONSE)
        events = (client.next_event(), client.next_event(), client.next_event())
        out = send_all(server, events)  # type: ignore[arg-type]
        assert out
        server.start_next_cycle()
        client.start_next_cycle()


_HEAD_END = re.compile(rb"\r\n\r\n")
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n")
_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([^\r\n]*))?\r\n")
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")


def minimal_exchanges(count: int) -> None:
    """`count` exchanges parsed and written the least a codec must do."""
    for _ in range(count):
        end = _HEAD_END.search(REQUEST)
        assert end is not None
        line = _REQUEST_LINE.match(REQUEST)
        assert line is not None
        fields = [(n.lower(), v) for n, v in _FIELD.findall(REQUEST, line.end(), end.end())]
        assert fields
        sent = b"".join([line[1], b" ", line[2], b" HTTP/1.1\r\n",
                         *[b"%s: %s\r\n" % f for f in _FORWARDED], b"\r\n"])
        assert sent
        end = _HEAD_END.search(RESPONSE)
        assert end is not None
        status = _STATUS_LINE.match(RESPONSE)
        assert status is not None
        fields = [(n.lower(), v) for n, v in _FIELD.findall(RESPONSE, status.end(), end.end())]
        length = int(next(v for n, v in fields if n == b"content-length"))
        body = RESPONSE[end.end():end.end() + length]
        back = b"".join([b"HTTP/1.1 ", status[2], b" ", status[3] or b"", b"\r\n",
                         *[b"%s: %s\r\n" % f for f in fields], b"\r\n", body])
        assert back


def per_exchange_us(run: Callable[[int], None], count: int) -> float:
    """The best of three CPU-time rounds of `run(count)`, in µs per exchange."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        run(count)
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.h11cost",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="exchanges per round")
    args = parser.parse_args(argv)
    if not 100 <= args.requests <= 1_000_000:
        parser.error(f"--requests must be within 100..1000000, not {args.requests!r}")
    h11_us = per_exchange_us(h11_exchanges, args.requests)
    least_us = per_exchange_us(minimal_exchanges, args.requests)
    wire_us = per_exchange_us(wire_exchanges, args.requests)
    print(f"h11, the data path's calls for one exchange: {h11_us:6.1f} µs CPU per request")
    print(f"lb.l7.wire, the same calls:                   {wire_us:6.1f} µs CPU per request "
          f"({h11_us / wire_us:.0f}x less than h11)")
    print(f"the least a codec must do for the same bytes: {least_us:6.1f} µs CPU per request "
          f"({h11_us / least_us:.0f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

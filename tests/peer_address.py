"""An HTTP server that answers every GET with the address it sees the request come from.

    python tests/peer_address.py 198.51.100.11 8080     # or an IPv6 address

Prints "listening" once bound, then logs nothing. Run in a server's network
namespace (tests/netns.py), it shows whether the balancer connected from its
own address or the client's.
"""

from __future__ import annotations

import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PeerAddress(BaseHTTPRequestHandler):
    """Answers 200 with the peer's IP address as the body, over kept-alive HTTP/1.1 (as IIS)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: nobody reads a server's log in a namespace."""


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer without its reverse lookup of the bound address.

    A namespace has no resolver to answer it: the lookup would wait for its timeout.
    """

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.socket.getsockname()[:2]
        self.server_name = str(host)


def main(host: str, port: int) -> None:
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with Server((host, port), PeerAddress) as server:
        print("listening", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

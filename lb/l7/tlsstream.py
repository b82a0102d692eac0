"""TLS that an http frontend terminates on a client's socket: ssl.MemoryBIO and the bare fd.

Why not trio.SSLStream: each of its reads and writes goes through a conflict
detector, its handshake guard, a retry loop that lets `SSLObject.read` raise
SSLWantReadError before anything is read, an inner lock and trio's
SocketStream (another conflict detector, a socket call that yields to the
scheduler); a small request cost some 130 Python calls more in TLS than in
plain text (docs/benchmarks.md, "TLS termination: the client side's own
stream"). Here a read first asks the TLS object for a record it already
holds, then the socket for what it has, and waits on trio only when the
kernel has nothing: the same syscall-first path lb.l7.adapter takes on a
plain socket (`receive_now`), so a request already on the socket costs no
scheduler round trip. A write encrypts and writes the fd at once.

What it keeps of SSLStream (https_compatible, server side):

- the handshake as the context does it: SNI certificate choice and ALPN
  (lb/tls.py's `sni_callback` gets the SSLObject), session tickets and
  resumption (OpenSSL's, per context); the caller bounds it in time;
- TLS 1.3's session tickets, which the server has ready once the client's
  Finished is read, go out with the first response rather than in a write of
  their own (SSLStream delays them the same way);
- EOF: a close_notify and a TCP EOF without one (a ragged EOF, which browsers
  and Outlook send) both end the plaintext with b""; any other TLS error
  breaks the stream (BrokenResourceError, the SSLError as its cause);
- what a read makes the TLS object send (a TLS 1.3 KeyUpdate answer, the
  no_renegotiation alert that refuses a TLS 1.2 renegotiation) is queued
  behind any ciphertext not yet written and written in order;
- cancellation: a read is synchronous up to its wait, so a cancelled read
  loses nothing; a write cancelled while the socket is full keeps the
  ciphertext it had made in the queue, which the next write or the close
  sends first, so the record stream stays whole;
- close: close_notify, as far as the socket takes it, then the socket.

Only one task may send at a time (trio.BusyResourceError otherwise); waits
are trio's `wait_readable` and `wait_writable`, which refuse a second waiter.
"""

from __future__ import annotations

import contextlib
import operator
import os
import ssl

import trio

from lb.l7.sockio import open_fd, stream_error

# Ciphertext read from the socket at once beyond the plaintext asked for: a
# record's header, MAC and padding (RFC 8446 §5.2: at most 256 bytes more).
_RECORD_OVERHEAD = 1024
_DEFAULT_RECEIVE = 64 * 1024


class TlsStream(trio.abc.Stream):
    """The server side of TLS over a connected trio socket stream.

    Args:
        transport: the accepted client connection.
        context: the frontend's server context (lb.tls.server_context).
    """

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport_stream = transport
        self.socket = transport.socket
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._queued = bytearray()  # ciphertext made but not yet written, in order
        self._handshaken = False
        self._ended = False  # the client's close_notify or EOF was read: b"" from now on
        self._socket_eof = False
        self._sending = False
        self._broken = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<TlsStream {self.ssl_object.version() or 'handshaking'}>"

    def selected_alpn_protocol(self) -> str | None:
        """The protocol ALPN chose (None before the handshake or without ALPN)."""
        return self.ssl_object.selected_alpn_protocol()

    # -- the handshake ------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the server handshake; BrokenResourceError for a client that fails it.

        The caller bounds it (the frontend's `handshake_timeout`): a stalled
        client leaves it waiting for bytes, which a cancel ends cleanly.
        """
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._handshaken:
            return  # what follows is the handshake's own: not another task's flush
        while not self._handshaken:
            try:
                self.ssl_object.do_handshake()
                self._handshaken = True
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLError, ssl.CertificateError) as exc:
                self._queue()  # the alert that says why, if the socket takes it now
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    self._write_now()
                raise self._break(exc) from exc
            self._queue()
            if not self._handshaken:
                await self._flush()
                while not self._fill(_DEFAULT_RECEIVE):
                    await trio.lowlevel.wait_readable(self.socket)
        if self.ssl_object.version() != "TLSv1.3":
            # TLS 1.2: the server's last flight (its Finished) is what the client
            # waits for before it sends a request. TLS 1.3: only the tickets are
            # left, and they can wait for the first response.
            await self._flush()

    # -- reading ------------------------------------------------------------------------

    def receive_now(self, max_bytes: int) -> bytes | None:
        """Plaintext the client sent, without waiting: at most `max_bytes` (one
        record's worth), b"" once the client ended the stream, None when it
        would have to wait for the socket."""
        self._check()
        if self._ended:
            return b""
        while True:
            try:
                data = self.ssl_object.read(max_bytes)
            except ssl.SSLWantReadError:
                # a record with no plaintext may still want an answer: a KeyUpdate's,
                # or the no_renegotiation alert to a TLS 1.2 renegotiation's hello
                self._answer()
                if not self._fill(max_bytes + _RECORD_OVERHEAD):
                    return None
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # close_notify, or the TCP EOF without one (the ragged EOF)
                self._ended = True
                return b""
            except (ssl.SSLError, ssl.CertificateError) as exc:
                self._answer()  # the fatal alert, if the socket takes it
                raise self._break(exc) from exc
            self._answer()
            return data

    def _answer(self) -> None:
        """Send now, as far as the socket takes it, what reading made the TLS object say."""
        if self._outgoing.pending:
            self._queue()
            self._write_now()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = _DEFAULT_RECEIVE if max_bytes is None else operator.index(max_bytes)
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        await self.do_handshake()
        waited = False
        while (data := self.receive_now(size)) is None:
            await trio.lowlevel.wait_readable(self.socket)
            waited = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _fill(self, size: int) -> bool:
        """Move what the socket holds into the TLS object; False when it holds nothing."""
        if self._socket_eof:
            return False
        try:
            data = os.read(open_fd(self.socket), size)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._break(stream_error(exc)) from exc
        if data:
            self._incoming.write(data)
        else:
            self._socket_eof = True
            self._incoming.write_eof()  # the TLS object then says close_notify or ragged
        return True

    # -- writing ------------------------------------------------------------------------

    async def send_unyielded(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt `data` and write it; True when it had to wait for the socket.

        A checkpoint for cancellation before anything is sent, but no yield
        when the socket took it all: lb.l7.adapter yields every few calls.
        """
        self._check()
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        if not self._handshaken:
            raise trio.BrokenResourceError("TLS data before the handshake")
        try:
            self.ssl_object.write(data)  # a memory BIO takes it all at once
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._break(exc) from exc
        self._queue()
        return await self._flush()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.do_handshake()
        if not await self.send_unyielded(data):
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    def _queue(self) -> None:
        if self._outgoing.pending:
            self._queued += self._outgoing.read()

    async def _flush(self) -> bool:
        """Write every queued byte, waiting while the socket is full; True if it waited.

        Cancelled in a wait, what is left stays queued, in order, for the next
        write or the close.
        """
        waited = False
        self._sending = True
        try:
            while not self._write_now():
                await trio.lowlevel.wait_writable(self.socket)
                waited = True
        finally:
            self._sending = False
        return waited

    def _write_now(self) -> bool:
        """Write what is queued; True when all of it went, False when the socket is full."""
        while self._queued:
            try:
                sent = os.write(open_fd(self.socket), self._queued)
            except BlockingIOError:
                return False
            except OSError as exc:
                raise self._break(stream_error(exc)) from exc
            del self._queued[:sent]
        return True

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """close_notify (not waiting for the client's), then the socket, even if cancelled."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._handshaken and not self._broken and not self._sending:
                with contextlib.suppress(ssl.SSLError):
                    # SSLWantReadError: the client's close_notify is not awaited
                    # (https_compatible); ours is in the outgoing BIO either way.
                    self.ssl_object.unwrap()
                self._queue()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._flush()
        finally:
            self._queued.clear()
            await self.transport_stream.aclose()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream was closed")
        if self._broken:
            raise trio.BrokenResourceError("the TLS stream is broken")

    def _break(self, exc: BaseException) -> trio.BrokenResourceError | trio.ClosedResourceError:
        """Mark the stream unusable; the error to raise (trio's, with `exc` as the cause)."""
        self._broken = True
        if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
            return exc
        return trio.BrokenResourceError(f"TLS: {exc}")

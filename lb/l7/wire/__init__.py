"""caslb's own HTTP/1.1 codec for the L7 data path: bytes in, events out; events in, bytes out.

One parser serves both roles (toward clients and toward servers), so the
framing a request is read with is the framing it is forwarded with. No I/O:
`lb.l7.adapter` feeds it bytes and writes what it returns.
"""

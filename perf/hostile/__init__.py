"""`python -m perf hostile`: caslb under attack, beside clients who behave.

Theory of operation. A backend process serves two HTTP servers (plain and TLS
ports); `caslb run` fronts them with every kind of frontend (plain and TLS L7,
tcp, sni) and the admin API, from a config the harness writes (rig.py). For
each attack (attacks.py) a separate process of well-behaved clients (good.py)
keeps asking every frontend for a page, one request at a time, and reports its
success rate and latency; the attack runs for a bounded time, then the harness
checks from outside that caslb is alive, logged nothing at ERROR, and serves
new clients again (runner.py). The soak (soak.py) mixes all of it for minutes
with reloads and reads the balancer's fds and RSS from /proc. harness.py
prints the table and decides the exit status.
"""

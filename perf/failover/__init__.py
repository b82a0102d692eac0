"""The failover harness: the same Exchange load and faults against several designs.

Each scenario runs a simulated CAS farm (casfarm) as one process, a balancer design
as another (none for DNS round robin), and the clients in the harness process, all
over loopback sockets. The harness injects one fault into one server mid-run,
clears it later, and measures what clients saw and what the balancer decided.
"""

"""`python -m perf matrix`: caslb beside HAProxy, nginx and mitmproxy, row by row.

See docs/benchmarks.md ("The benchmark matrix") for what each row measures.
"""

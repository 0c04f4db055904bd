"""Benchmarks of cbir-pg's speed (issue 9): ingest efficiency (P1), query latency (P2), evaluation
throughput (P3), and index build / binary COPY load. Run with ``python -m bench.run`` (``make bench``).

Never imported by the test suite.
"""

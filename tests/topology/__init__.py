"""The deployment topology of docker/ run as processes on loopback, for tests/test_topology.py and benchmarks/scale.py."""

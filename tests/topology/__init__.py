"""The deployment topology of docker/ run as processes on loopback, for tests/service/test_topology.py and benchmarks/scale.py."""

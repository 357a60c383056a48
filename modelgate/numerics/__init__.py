"""Numbers about a model: its inputs, the comparison of outputs, the output checks, latency timing and the
benchmark sweep, the tolerances a graph's precision implies, and the baseline's drift.
"""

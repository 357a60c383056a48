"""Processes: the bounded, OS-sandboxed child processes that run model code, their warm pools and spares,
and the jobs those children run (modelgate.execution.jobs and target_jobs run only inside them).
"""

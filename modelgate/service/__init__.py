"""The long-running and user-facing side: the command line, the schedule, the relay for MLflow webhooks and
the Prefect server a command starts.
"""

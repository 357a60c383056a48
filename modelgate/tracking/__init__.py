"""MLflow: the run of each validation, the model registry's versions, runs abandoned by a dead process, and
the signing of what passed.
"""

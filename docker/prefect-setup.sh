#!/bin/sh
# Registers modelgate with the Prefect server at $PREFECT_API_URL; safe to run again after every upgrade:
# the `modelgate` process work pool, its `gpu` work queue (at most $MODELGATE_GPU_SLOTS runs at once, one per
# GPU), both deployments of prefect.yaml, and the automation that marks flow runs crashed when they go silent.
set -eu
cd "$(dirname "$0")/.."

prefect work-pool inspect modelgate >/dev/null 2>&1 || prefect work-pool create modelgate --type process
prefect work-queue inspect gpu --pool modelgate >/dev/null 2>&1 \
    || prefect work-queue create gpu --pool modelgate --limit "${MODELGATE_GPU_SLOTS:-1}"
prefect --no-prompt deploy --all
prefect automation inspect modelgate-crash-silent-flow-runs >/dev/null 2>&1 \
    || prefect automation create --from-file docker/automations.yaml

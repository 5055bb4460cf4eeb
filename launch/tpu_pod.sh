#!/usr/bin/env bash
# TPU VM pod: run the same command on every worker; JAX reads the TPU metadata.
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a WORKERS=8 launch/tpu_pod.sh unlearn --config ...
#   DRY_RUN=1 WORKERS=8 launch/tpu_pod.sh ...   prints the plan only
set -euo pipefail
TPU_NAME="${TPU_NAME:-my-tpu}"; ZONE="${ZONE:-us-central2-b}"; WORKERS="${WORKERS:-1}"
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  exec python -m jaxunlearn.launch tpu --hosts "$WORKERS" --tpu-name "$TPU_NAME" --zone "$ZONE" -- "$@"
fi
cmd="JAXUNLEARN_MULTIHOST=1 jaxunlearn $(printf '%q ' "$@")"
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$cmd"

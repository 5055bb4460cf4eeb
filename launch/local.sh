#!/usr/bin/env bash
# One process on this machine (all local GPUs / TPU chips form the mesh).
#   launch/local.sh unlearn --config configs/ga-mllmu-llava-1.5-7b.yaml
#   DRY_RUN=1 launch/local.sh ...   prints the plan only
set -euo pipefail
if [[ "${DRY_RUN:-0}" == "1" ]]; then exec python -m jaxunlearn.launch local --hosts 1 -- "$@"; fi
exec jaxunlearn "$@"

#!/bin/sh
# Dispatches a plan on Nomad level by level: each image that needs a build is one dispatch of
# the imgforge-build job, its layer key as the idempotency token; a level waits for the one
# before it. Usage: examples/ci/nomad-dispatch.sh [RECIPES…]  (needs imgforge, nomad, jq)
set -eu
[ "$#" -gt 0 ] || set -- recipes
revision=$(git rev-parse HEAD)
levels=$(imgforge plan "$@" --format json | jq '.levels | length')
i=0
while [ "$i" -lt "$levels" ]; do
  # Planned again at each level: the layer keys of a level are known once its parents exist.
  plan=$(imgforge plan "$@" --format json)
  ids=""
  for id in $(printf '%s' "$plan" | jq -r --argjson l "$i" '.nodes[] | select(.level == $l and .status == "needs-build") | .id'); do
    recipe=$(printf '%s' "$plan" | jq -r --arg id "$id" '.nodes[] | select(.id == $id) | .recipe')
    key=$(printf '%s' "$plan" | jq -r --arg id "$id" '.nodes[] | select(.id == $id) | .layer_key // empty')
    dispatched=$(nomad job dispatch -detach -idempotency-token "${key:-$id-$revision}" \
      -meta recipe="$recipe" -meta node="$id" -meta revision="$revision" imgforge-build)
    ids="$ids $(printf '%s\n' "$dispatched" | sed -n 's/^Dispatched Job ID = //p')"
  done
  for job in $ids; do
    until nomad job status -short "$job" | grep -q '^Status *= dead'; do sleep 10; done
    nomad job status -short "$job" | grep -q 'complete' || { echo "$job failed" >&2; exit 1; }
  done
  i=$((i + 1))
done

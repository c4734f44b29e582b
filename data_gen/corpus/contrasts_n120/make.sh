#!/usr/bin/env bash
# A small corpus with order-free targets and paired contrasts (docs/results.md#paired-effects-teacher-and-student):
# one 120-agent ANES world, the vaccine campaign, the embedded teacher with short answers and
# contrasts for half of the agent-ticks (teacher.yaml). Resumable: re-run the script; COMMIT=1
# commits the finished file.
set -euo pipefail
OUT=$(dirname "$0")
LSM=${LSM:-lsm}
[ -f "$OUT/world.h5" ] || $LSM world --population anes96 --graph default --agents 120 --seed 0 --out "$OUT/world.h5"
[ -f "$OUT/vaccine_campaign.h5" ] || /usr/bin/time -f "%e s wall, %M KiB peak" \
  $LSM gen --world "$OUT/world.h5" --scenario vaccine_campaign --teacher "$OUT/teacher.yaml" --seed 0 \
    --out "$OUT/vaccine_campaign.h5" --quiet true
if [ "${COMMIT:-0}" = 1 ]; then
  git add "$OUT/world.h5" "$OUT/vaccine_campaign.h5"
  git commit -q -m "corpus contrasts_n120: vaccine_campaign with paired contrasts" -- "$OUT/world.h5" "$OUT/vaccine_campaign.h5"
fi

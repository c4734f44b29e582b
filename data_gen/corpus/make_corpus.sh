#!/usr/bin/env bash
# Reference teacher corpus (docs/teacher.md#the-reference-corpora): one ANES world, 3 shipped
# scenarios x 2 LLM sampling seeds, embedded SmolLM2 teacher. Files *_s1.h5 differ from *_s0.h5
# only in the LLM sampling seed (same exposures and shown-neighbour draws): the teacher's own noise floor for `lsm validate`.
#   AGENTS=200 data_gen/corpus/make_corpus.sh      # the full corpus (about 1.3 s per agent-tick here)
#   AGENTS=20  data_gen/corpus/make_corpus.sh      # the subset shipped in the repository
# Every run resumes if killed: re-run the script. COMMIT=1 commits each file as it is finished
# (the world with the first), so a corpus longer than one sitting is kept piece by piece.
set -euo pipefail
AGENTS=${AGENTS:-200}
OUT=${OUT:-$(dirname "$0")/n${AGENTS}}
LSM=${LSM:-lsm}
mkdir -p "$OUT"
[ -f "$OUT/world.h5" ] || $LSM world --population anes96 --graph default --agents "$AGENTS" --seed 0 --out "$OUT/world.h5"
for scenario in vaccine_campaign product_adoption guessing_game; do
  for seed in 0 1; do
    [ -f "$OUT/${scenario}_s${seed}.h5" ] && continue
    /usr/bin/time -f "%e s wall, %M KiB peak: $scenario seed $seed" \
      $LSM gen --world "$OUT/world.h5" --scenario "$scenario" --teacher embedded --seed 0 --llm_seed "$seed" \
        --out "$OUT/${scenario}_s${seed}.h5" --quiet true
    if [ "${COMMIT:-0}" = 1 ]; then
      git add "$OUT/world.h5" "$OUT/${scenario}_s${seed}.h5"
      git commit -q -m "corpus n${AGENTS}: ${scenario} LLM seed ${seed} (make_corpus.sh, teacher embedded)" -- "$OUT/world.h5" "$OUT/${scenario}_s${seed}.h5"
    fi
  done
done

#!/usr/bin/env bash
# The variants corpus (docs/teacher.md#the-variants-corpus): one ANES world, the 3 shipped scenarios
# x K training variants (jittered valence and credibility, paraphrased event texts, the rule's
# training values) + one variant per held-out rule value (guessing_game p = 3/4, vaccine price $20,
# Zap discount 10%), all written by data_gen/corpus/variants.py into $OUT/scenarios/, and one
# `lsm gen` trace per variant (teacher preset $TEACHER, scenario seed 0, LLM seed 0).
#   AGENTS=200 data_gen/corpus/make_variants_corpus.sh            # 12 traces of 8 ticks x 200 agents (hours on a CPU)
#   K=5 SEED=1 TEACHER=vllm OUT=out/variants data_gen/corpus/make_variants_corpus.sh
#   LSM=echo OUT=/tmp/v data_gen/corpus/make_variants_corpus.sh   # a dry run: the YAMLs and the commands, no traces
# Every run resumes if killed: re-run the script (a finished trace is skipped; the variant YAMLs
# are rewritten identically, and refused if they would change under a finished trace). COMMIT=1
# commits each trace with its variant YAML as it is finished (the world with the first).
set -euo pipefail
AGENTS=${AGENTS:-200}
K=${K:-3}
SEED=${SEED:-0}
TEACHER=${TEACHER:-embedded}
OUT=${OUT:-$(dirname "$0")/variants_n${AGENTS}}
LSM=${LSM:-lsm}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/scenarios"
[ -f "$OUT/world.h5" ] || $LSM world --population anes96 --graph default --agents "$AGENTS" --seed 0 --out "$OUT/world.h5"
for scenario in vaccine_campaign product_adoption guessing_game; do
  variants=$($PYTHON -m lsm.data_gen.corpus.variants --scenario "$scenario" --variants "$K" --seed "$SEED" --out "$OUT/scenarios")
  while IFS= read -r yaml; do
    stem=$(basename "$yaml" .yaml)
    [ -f "$OUT/${stem}.h5" ] && continue
    /usr/bin/time -f "%e s wall, %M KiB peak: $stem" \
      $LSM gen --world "$OUT/world.h5" --scenario "$yaml" --teacher "$TEACHER" --seed 0 --llm_seed 0 \
        --out "$OUT/${stem}.h5" --quiet true
    if [ "${COMMIT:-0}" = 1 ]; then
      git add "$OUT/world.h5" "$yaml" "$OUT/${stem}.h5"
      git commit -q -m "variants corpus n${AGENTS}: ${stem} (make_variants_corpus.sh, teacher ${TEACHER}, seed ${SEED})" \
        -- "$OUT/world.h5" "$yaml" "$OUT/${stem}.h5"
    fi
  done <<< "$variants"
done

#!/usr/bin/env bash
# Set up .venv and run the main job: train the small de->en model on Multi30k for at most
# 5 minutes (+experiment=quickstart), translate a few sentences with it, score it on
# test_2016_flickr (sacreBLEU BLEU and chrF) and print a summary with the next commands.
# Corpora come from $LSTM_MT_DATA_MIRROR, else ../shared/data if present, else are downloaded.
# Run it again to reuse the trained model (RUN=folder for another one); extra arguments go
# to `lstm-mt train` (e.g. train.precision=bf16 where bf16 is faster, device=cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${LSTM_MT_DATA_MIRROR:-}" ] && [ -d ../shared/data/multi30k ]; then
    export LSTM_MT_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
RUN=${RUN:-runs/quickstart}
bin=.venv/bin
checkpoint="$RUN/checkpoints/best.pt"

"$bin/lstm-mt" train +experiment=quickstart hydra.run.dir="$RUN" train.resume=auto train.quiet=true "$@"

echo
echo "== A few translations (beam 5)"
examples=(
    "Ein Mann fährt mit dem Fahrrad durch die Stadt."
    "Zwei Kinder spielen im Sand am Strand."
    "Eine Frau in einem roten Kleid singt auf einer Bühne."
)
printf '%s\n' "${examples[@]}" | "$bin/lstm-mt" translate checkpoint="$checkpoint" progress=false 2>/dev/null |
    sed 's/^/  en: /' | paste -d '\n' <(printf '  de: %s\n' "${examples[@]}") -

echo
echo "== Scores"
"$bin/lstm-mt" evaluate checkpoint="$checkpoint" splits=[test_2016_flickr] output_dir="$RUN/eval" progress=false

"$bin/python" - "$RUN" <<'PY'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
report = json.loads((run / "eval" / "report.json").read_text())
scores = report["test_sets"][0]["scores"]
end = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "end"][-1]
checkpoint = run / "checkpoints" / "best.pt"
print(f"""
== Summary
Multi30k de->en test_2016_flickr: BLEU {scores['BLEU']['score']:.1f}, chrF {scores['chrF']['score']:.1f} (beam 5)
trained {end['step']} updates in {end.get('minutes', float('nan')):.1f} min (stopped by {end['reason']}); checkpoint {checkpoint}
next:
  lstm-mt translate checkpoint={checkpoint} input=my.de output=my.en    # a file, one line per line
  lstm-mt inspect checkpoint={checkpoint} text="Ein Hund rennt über die Wiese."    # gates and attention
  lstm-mt serve checkpoint={checkpoint}    # HTTP API and web page (pip install '.[serve]')
  bash scripts/recipe.sh multi30k_de_en    # the full recipe (hours on a CPU)""")
PY

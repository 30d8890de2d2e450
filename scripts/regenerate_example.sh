#!/usr/bin/env bash
# Regenerates the committed example study (studies/example/: advisor.db, tune_output.txt, report/) from scratch
# on the bundled model: `bash scripts/regenerate_example.sh` from the repository root (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f studies/example/advisor.db
COLUMNS=120 advisor tune --space studies/example/space.toml --budgets 10%,25%,50% --trials 300 --sampler random \
  --resident --storage sqlite:///studies/example/advisor.db --study bundled-example \
  | sed 's/[[:space:]]*$//' > studies/example/tune_output.txt
advisor report bundled-example --storage sqlite:///studies/example/advisor.db --memory 10%,25%,50% \
  -o studies/example/report

#!/usr/bin/env bash
# savings_captured of the policy, DAYS-day windows (default 7), seeds 1-8, every shipped scenario;
# columns: scenario, seed, savings_captured, policy s over the import limit, policy unmet kWh,
# policy s outside the SoC window, optimum unmet kWh. Needs jq and target/release/stationd.
set -euo pipefail
bin=${STATIOND:-target/release/stationd}
days=${DAYS:-7}
for s in sunny-weekday ev-rush cloudy-winter-weekday weekend faults-day; do
  for seed in 1 2 3 4 5 6 7 8; do
    "$bin" backtest --scenario simulator/scenarios/$s.toml --days "$days" --seed "$seed" --compare --json 2>/dev/null |
    jq -r --arg s "$s" --arg seed "$seed" '[ $s, $seed, (.savings_captured.policy // "n/a"),
      (.runs[] | select(.controller=="policy") | .kpis.import_limit_exceeded_s, .objective.unmet_kwh, .kpis.soc_window_violation_s),
      (.runs[] | select(.controller=="optimum") | .objective.unmet_kwh) ] | @tsv'
  done
done

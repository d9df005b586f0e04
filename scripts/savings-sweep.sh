#!/usr/bin/env bash
# savings_captured of the policy, the planner (its own forecasts) and the perfect-forecast
# planner, DAYS-day windows (default 7), seeds SEEDS (default 1-8), every shipped scenario (or
# SCENARIOS). Columns: scenario, seed, savings policy, planner, planner_perfect, then in the
# runs' order (policy, planner_perfect, planner): s over the import limit, unmet kWh, s outside
# the SoC window; last the optimum's unmet kWh.
# Needs jq and target/release/stationd (cargo build --release --bin stationd).
set -euo pipefail
bin=${STATIOND:-target/release/stationd}
days=${DAYS:-7}
seeds=${SEEDS:-1 2 3 4 5 6 7 8}
scenarios=${SCENARIOS:-sunny-weekday ev-rush ev-rush-booked cloudy-winter-weekday weekend faults-day}
for s in $scenarios; do
  for seed in $seeds; do
    "$bin" backtest --scenario simulator/scenarios/$s.toml --days "$days" --seed "$seed" --compare --json 2>/dev/null |
    jq -r --arg s "$s" --arg seed "$seed" '[ $s, $seed,
      (.savings_captured.policy // "n/a"), (.savings_captured.planner // "n/a"),
      (.savings_captured.planner_perfect // "n/a"),
      (.runs[] | select(.controller=="policy" or .controller=="planner" or .controller=="planner_perfect") |
        .kpis.import_limit_exceeded_s, .objective.unmet_kwh, .kpis.soc_window_violation_s),
      (.runs[] | select(.controller=="optimum") | .objective.unmet_kwh) ] | @tsv'
  done
done

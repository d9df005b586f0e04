#!/usr/bin/env bash
# Regenerates the README's scorecard table: 1 day, seed 1, every shipped scenario.
set -euo pipefail
bin=${STATIOND:-target/release/stationd}
for s in sunny-weekday ev-rush ev-rush-booked cloudy-winter-weekday weekend faults-day; do
  "$bin" backtest --scenario simulator/scenarios/$s.toml --compare --json 2>/dev/null |
  jq -r --arg s "$s" '. as $r | .runs | to_entries[] | .value as $v |
    [ (if .key == 0 then $s else "" end), $v.controller,
      ($v.objective.cost_cny*10|round/10), ($v.kpis.peak_import_kw*10|round/10),
      $v.kpis.import_limit_exceeded_s, ($v.kpis.ev_delivered_kwh*10|round/10),
      ($v.objective.unmet_kwh*10|round/10), ($v.objective.stored_change_kwh*10|round/10),
      ($v.objective.total_cny*10|round/10),
      (if $r.savings_captured[$v.controller] then (($r.savings_captured[$v.controller]*1000|round/10|tostring) + " %") else "" end)
    ] | "| " + (map(tostring) | join(" | ")) + " |"'
done

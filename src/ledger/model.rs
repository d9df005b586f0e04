//! Records the ledger keeps (15-minute buckets, charging sessions), range totals and CSV.

use chrono::{DateTime, TimeZone, Utc};
use serde::ser::SerializeStruct;
use serde::Serialize;
use std::fmt::Write as _;

use super::flows::Flows;

/// Bucket length: UTC quarter hours.
pub const BUCKET_S: i64 = 900;

/// Start of the UTC quarter hour that contains `at`.
pub fn bucket_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let s = at.timestamp().div_euclid(BUCKET_S) * BUCKET_S;
    utc_from_s(s)
}

pub(crate) fn utc_from_s(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

macro_rules! bucket_fields {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Totals of one UTC quarter hour. Energies in Wh, money in CNY, CO2 in kg.
        ///
        /// Serialized with one more field, `estimated` (bool): whether any of its energy was
        /// booked with one flow estimated from the balance ([`Bucket::is_estimated`]).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Bucket {
            /// Start of the quarter hour (UTC, aligned to :00/:15/:30/:45).
            pub start: DateTime<Utc>,
            $($(#[$doc])* pub $name: f64,)*
        }

        /// Column names of the numeric bucket fields, in storage and CSV order.
        pub const BUCKET_COLUMNS: &[&str] = &[$(stringify!($name)),*];

        impl Bucket {
            /// Numeric fields in [`BUCKET_COLUMNS`] order.
            pub fn values(&self) -> Vec<f64> {
                vec![$(self.$name),*]
            }

            /// Rebuilds a bucket from [`BUCKET_COLUMNS`]-ordered values (missing values are 0).
            pub fn from_values(start: DateTime<Utc>, values: &[f64]) -> Self {
                let mut it = values.iter().copied();
                Self { start, $($name: it.next().unwrap_or(0.0),)* }
            }

            /// An empty bucket.
            pub fn empty(start: DateTime<Utc>) -> Self {
                Self { start, $($name: 0.0,)* }
            }

            /// Whether any energy in the bucket was booked with an estimated flow.
            pub fn is_estimated(&self) -> bool {
                self.estimated_s > 0.0
            }

            /// Adds `other` into `self` (sums, and max for `peak_import_w`).
            pub fn merge(&mut self, other: &Bucket) {
                let peak = self.peak_import_w.max(other.peak_import_w);
                $(self.$name += other.$name;)*
                self.peak_import_w = peak;
            }
        }

        impl Serialize for Bucket {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut st = ser.serialize_struct("Bucket", BUCKET_COLUMNS.len() + 2)?;
                st.serialize_field("start", &self.start)?;
                $(st.serialize_field(stringify!($name), &self.$name)?;)*
                st.serialize_field("estimated", &self.is_estimated())?;
                st.end()
            }
        }
    };
}

bucket_fields! {
    /// Seconds of measurements booked into the bucket.
    covered_s,
    pv_wh,
    building_wh,
    vehicles_wh,
    battery_charge_wh,
    battery_discharge_wh,
    /// Measured grid import.
    import_wh,
    /// Measured grid export.
    export_wh,
    pv_to_building_wh,
    pv_to_vehicles_wh,
    pv_to_battery_wh,
    pv_to_grid_wh,
    battery_to_building_wh,
    battery_to_vehicles_wh,
    battery_to_grid_wh,
    grid_to_building_wh,
    grid_to_vehicles_wh,
    grid_to_battery_wh,
    /// Balance residual (sources minus sinks), signed.
    unaccounted_wh,
    /// Vehicle energy from PV, directly or via PV-charged battery.
    vehicles_green_wh,
    /// Building energy from PV, directly or via PV-charged battery.
    building_green_wh,
    /// Highest single-cycle import power in the bucket.
    peak_import_w,
    /// Measured import x import price.
    import_cost_cny,
    /// Measured export x export price.
    export_revenue_cny,
    /// Measured import x emission factor.
    co2_kg,
    /// Seconds of the bucket booked with one flow (a dead charger, a stale meter) estimated
    /// from the balance `grid = building + vehicles - pv - battery`; 0 when all was measured.
    estimated_s,
}

/// Energy the devices' own counters measured beyond what the ledger booked from powers over
/// the same span (signed Wh): a gap or a lie the power readings missed, booked when the
/// counter is read again (see `daemon::publish::CounterReconciler`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterCorrection {
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub vehicles_wh: f64,
}

/// One energy counter's reconciliation state, saved with every flush (so it always matches the
/// energy flushed with it) and restored at start: after a restart or a `kill -9` the counter's
/// rise over the downtime is booked as a correction.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCounter {
    /// `pv`, `import`, `export` or `charger:<id>`.
    pub name: String,
    /// The counter's last accepted value, Wh.
    pub value: f64,
    /// Energy booked from powers since that value, Wh.
    pub booked_wh: f64,
    /// When that value was read (Unix seconds, the daemon's clock): bounds a plausible rise.
    pub at_s: f64,
}

impl CounterCorrection {
    pub fn is_zero(&self) -> bool {
        self.values().iter().all(|v| *v == 0.0)
    }

    pub fn values(&self) -> [f64; 4] {
        [self.pv_wh, self.import_wh, self.export_wh, self.vehicles_wh]
    }
}

impl Bucket {
    /// Average import power over the quarter hour (the demand-charge quantity).
    pub fn avg_import_w(&self) -> f64 {
        self.import_wh * 3600.0 / BUCKET_S as f64
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_cycle(
        &mut self,
        f: &Flows,
        dt_s: f64,
        estimated: bool,
        vehicles_green_wh: f64,
        building_green_wh: f64,
        import_w: f64,
        price: (f64, f64, f64),
    ) {
        let (import_price, export_price, co2) = price;
        self.covered_s += dt_s;
        if estimated {
            self.estimated_s += dt_s;
        }
        self.pv_wh += f.pv_wh;
        self.building_wh += f.building_wh;
        self.vehicles_wh += f.vehicles_wh;
        self.battery_charge_wh += f.battery_charge_wh;
        self.battery_discharge_wh += f.battery_discharge_wh;
        self.import_wh += f.grid_import_wh;
        self.export_wh += f.grid_export_wh;
        self.pv_to_building_wh += f.pv_to_building_wh;
        self.pv_to_vehicles_wh += f.pv_to_vehicles_wh;
        self.pv_to_battery_wh += f.pv_to_battery_wh;
        self.pv_to_grid_wh += f.pv_to_grid_wh;
        self.battery_to_building_wh += f.battery_to_building_wh;
        self.battery_to_vehicles_wh += f.battery_to_vehicles_wh;
        self.battery_to_grid_wh += f.battery_to_grid_wh;
        self.grid_to_building_wh += f.grid_to_building_wh;
        self.grid_to_vehicles_wh += f.grid_to_vehicles_wh;
        self.grid_to_battery_wh += f.grid_to_battery_wh;
        self.unaccounted_wh += f.unaccounted_wh;
        self.vehicles_green_wh += vehicles_green_wh;
        self.building_green_wh += building_green_wh;
        self.peak_import_w = self.peak_import_w.max(import_w);
        self.import_cost_cny += f.grid_import_wh / 1000.0 * import_price;
        self.export_revenue_cny += f.grid_export_wh / 1000.0 * export_price;
        self.co2_kg += f.grid_import_wh / 1000.0 * co2;
    }

    /// Add a counter correction: to the measured totals (PV, import, export, vehicles) and their money
    /// and CO2; the flows' split cannot place it, so the sources' net change goes to
    /// `unaccounted_wh`.
    pub(crate) fn add_correction(&mut self, c: &CounterCorrection, price: (f64, f64, f64)) {
        let (import_price, export_price, co2) = price;
        self.pv_wh += c.pv_wh;
        self.import_wh += c.import_wh;
        self.export_wh += c.export_wh;
        self.vehicles_wh += c.vehicles_wh;
        self.unaccounted_wh += c.pv_wh + c.import_wh - c.export_wh - c.vehicles_wh;
        self.import_cost_cny += c.import_wh / 1000.0 * import_price;
        self.export_revenue_cny += c.export_wh / 1000.0 * export_price;
        self.co2_kg += c.import_wh / 1000.0 * co2;
    }
}

/// One charging session (closed, or open with its running totals).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    pub charger_id: String,
    pub start: DateTime<Utc>,
    /// `None` while the session is open.
    pub end: Option<DateTime<Utc>>,
    /// Last cycle that saw the charger (for open sessions and for missing chargers).
    pub last_seen: DateTime<Utc>,
    /// Energy delivered to the vehicle.
    pub energy_wh: f64,
    /// Energy from PV, directly or via PV-charged battery.
    pub green_wh: f64,
    /// Energy straight from PV.
    pub from_pv_wh: f64,
    /// Energy from the battery (green and grey).
    pub from_battery_wh: f64,
    /// Energy straight from the grid.
    pub from_grid_wh: f64,
    /// `green_wh / energy_wh` in percent (0 for an empty session).
    pub green_share_pct: f64,
    /// Grid energy (direct and via grid-charged battery) x emission factor.
    pub co2_kg: f64,
    /// Direct grid energy x price at the time + battery energy at its stored purchase cost;
    /// PV energy at 0.
    pub cost_cny: f64,
}

impl SessionRecord {
    pub(crate) fn new(charger_id: &str, start: DateTime<Utc>) -> Self {
        Self {
            charger_id: charger_id.to_owned(),
            start,
            end: None,
            last_seen: start,
            energy_wh: 0.0,
            green_wh: 0.0,
            from_pv_wh: 0.0,
            from_battery_wh: 0.0,
            from_grid_wh: 0.0,
            green_share_pct: 0.0,
            co2_kg: 0.0,
            cost_cny: 0.0,
        }
    }

    /// Add `share` of the cycle's vehicle flows `f` to the session, with the battery's origin
    /// `bat` and the grid's import price and emissions.
    pub(crate) fn add_share(
        &mut self,
        f: &super::Flows,
        bat: &super::DischargeOrigin,
        share: f64,
        price: f64,
        co2: f64,
    ) {
        let from_pv = f.pv_to_vehicles_wh * share;
        let from_bat = f.battery_to_vehicles_wh * share;
        let from_grid = f.grid_to_vehicles_wh * share;
        self.energy_wh += f.vehicles_wh * share;
        self.from_pv_wh += from_pv;
        self.from_battery_wh += from_bat;
        self.from_grid_wh += from_grid;
        self.green_wh += from_pv + from_bat * bat.green_fraction;
        self.co2_kg += from_grid / 1000.0 * co2 + from_bat * bat.co2_kg_per_wh;
        self.cost_cny += from_grid / 1000.0 * price + from_bat * bat.cost_cny_per_wh;
        self.update_share();
    }

    /// Whether the session is still running.
    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }

    pub(crate) fn update_share(&mut self) {
        self.green_share_pct = if self.energy_wh > 0.0 {
            (self.green_wh / self.energy_wh * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
    }

    /// Whether the session overlaps `[from, to)`.
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.start < to && self.end.unwrap_or(self.last_seen) >= from
    }
}

/// Totals over a time range, built from the buckets whose start lies in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_count: usize,
    /// All buckets summed (`start` = `from`; `peak_import_w` is the highest cycle).
    pub sum: Bucket,
    /// Highest 15-minute average import power.
    pub peak_15min_import_w: f64,
    /// Green share of EV energy, percent.
    pub ev_green_share_pct: f64,
    /// PV used on site (directly or charged into the battery) / PV produced, percent.
    pub self_consumption_pct: f64,
    /// Loads served by PV directly or via PV-charged battery / loads, percent.
    pub self_sufficiency_pct: f64,
    /// Import cost - export revenue (demand charge not included).
    pub net_energy_cost_cny: f64,
}

impl Totals {
    /// Totals of `buckets` (the caller selects the range).
    pub fn from_buckets(from: DateTime<Utc>, to: DateTime<Utc>, buckets: &[Bucket]) -> Self {
        let mut sum = Bucket::empty(from);
        let mut peak_15 = 0.0_f64;
        for b in buckets {
            sum.merge(b);
            peak_15 = peak_15.max(b.avg_import_w());
        }
        let pct = |num: f64, den: f64| {
            if den > 0.0 {
                (num / den * 100.0).clamp(0.0, 100.0)
            } else {
                0.0
            }
        };
        Self {
            from,
            to,
            bucket_count: buckets.len(),
            peak_15min_import_w: peak_15,
            ev_green_share_pct: pct(sum.vehicles_green_wh, sum.vehicles_wh),
            self_consumption_pct: pct(
                sum.pv_to_building_wh + sum.pv_to_vehicles_wh + sum.pv_to_battery_wh,
                sum.pv_wh,
            ),
            self_sufficiency_pct: pct(
                sum.vehicles_green_wh + sum.building_green_wh,
                sum.vehicles_wh + sum.building_wh,
            ),
            net_energy_cost_cny: sum.import_cost_cny - sum.export_revenue_cny,
            sum,
        }
    }
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// CSV of buckets: `start` (RFC 3339), then [`BUCKET_COLUMNS`], then `estimated`
/// (`true`/`false`), one line per bucket.
pub fn buckets_csv(buckets: &[Bucket]) -> String {
    let mut out = String::from("start");
    for c in BUCKET_COLUMNS {
        out.push(',');
        out.push_str(c);
    }
    out.push_str(",estimated\n");
    for b in buckets {
        out.push_str(&b.start.to_rfc3339());
        for v in b.values() {
            let _ = write!(out, ",{v}");
        }
        let _ = writeln!(out, ",{}", b.is_estimated());
    }
    out
}

/// CSV of sessions, one line per session; `end` is empty for open sessions.
pub fn sessions_csv(sessions: &[SessionRecord]) -> String {
    let mut out = String::from(
        "charger_id,start,end,last_seen,energy_wh,green_wh,from_pv_wh,from_battery_wh,\
         from_grid_wh,green_share_pct,co2_kg,cost_cny\n",
    );
    for s in sessions {
        csv_field(&mut out, &s.charger_id);
        let end = s.end.map(|e| e.to_rfc3339()).unwrap_or_default();
        let _ = writeln!(
            out,
            ",{},{},{},{},{},{},{},{},{},{},{}",
            s.start.to_rfc3339(),
            end,
            s.last_seen.to_rfc3339(),
            s.energy_wh,
            s.green_wh,
            s.from_pv_wh,
            s.from_battery_wh,
            s.from_grid_wh,
            s.green_share_pct,
            s.co2_kg,
            s.cost_cny
        );
    }
    out
}

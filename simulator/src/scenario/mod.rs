//! Scenario files: everything that describes one simulated station and its days.
//!
//! Every field has a serde default equal to the reference station of `docs/reference-station.md`,
//! so an empty TOML file is the reference sunny summer weekday. Unknown keys are rejected, and
//! validation reports every problem at once, each named by its dotted key (`battery.soh_pct`,
//! `vehicles.scripted[2].at`).

mod validate;

pub use validate::{Issue, Issues};

use crate::view::WireFaults;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors while reading or validating a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// Every problem found, each named by its dotted key (one line each).
    #[error("{0}")]
    Invalid(Issues),
}

/// One simulated station and its days.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub site: Site,
    pub start: Start,
    pub weather: Weather,
    pub pv: PvParams,
    pub battery: BatteryParams,
    pub chargers: ChargerParams,
    pub building: BuildingParams,
    pub vehicles: VehicleParams,
    pub grid: GridParams,
    pub tariff: Tariff,
    /// What the backtest's objective charges for unserved car energy and credits for energy
    /// left in the battery.
    pub objective: ObjectiveValues,
    /// Grid emission factor, kgCO2 per kWh imported.
    pub co2_kg_per_kwh: f64,
    pub faults: Vec<FaultSpec>,
}

/// Where the station is.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Site {
    pub lat_deg: f64,
    pub lon_deg: f64,
    /// IANA time zone name, e.g. "Asia/Shanghai".
    pub timezone: String,
}

/// Local start of the simulation.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Start {
    /// Local date "YYYY-MM-DD" (also sets the season and the weekday).
    pub date: String,
    /// Local time "HH:MM" or "HH:MM:SS".
    pub time: String,
}

/// Weather: a daily clearness draw times an intra-day AR(1) cloud process (per minute).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Weather {
    /// Mean daily clearness (1 = clear sky).
    pub clearness_mean: f64,
    /// Standard deviation of the daily clearness draw.
    pub clearness_spread: f64,
    /// If set, every day has exactly this daily clearness (no draw).
    pub fixed_clearness: Option<f64>,
    /// AR(1) coefficient of the per-minute cloud deviation.
    pub cloud_phi: f64,
    /// Standard deviation of the per-minute cloud innovation.
    pub cloud_sigma: f64,
}

/// PV array and inverter.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct PvParams {
    pub kwp: f64,
    pub inverter_ac_kw: f64,
    /// Inverter DC to AC efficiency, 0..1.
    pub inverter_efficiency: f64,
    /// DC performance ratio (temperature, soiling, wiring), 0..1.
    pub performance_ratio: f64,
    /// Ramp of the active-power limit, % of rating per second.
    pub limit_ramp_pct_per_s: f64,
    /// Initial `WMaxLimPct_RvrtTms`, s (0 = never reverts).
    pub limit_revert_s: u32,
}

/// Second-life battery and its PCS.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryParams {
    pub nameplate_kwh: f64,
    pub soh_pct: f64,
    pub pcs_kw: f64,
    /// C-rate cap of the aged (usable) capacity.
    pub c_rate_cap: f64,
    pub initial_soc_pct: f64,
    /// BMS SoC window before narrowing by cell imbalance.
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    /// Initial `SoCRsvMin`, %.
    pub soc_reserve_min_pct: f64,
    /// One-way efficiency (AC to DC when charging, DC to AC when discharging).
    pub efficiency: f64,
    pub ambient_c: f64,
    /// Initial cell temperature, C (defaults to ambient).
    pub initial_temp_c: Option<f64>,
    /// Cell voltage spread at mid SoC, mV; narrows the SoC window by 0.1 % per mV on each end.
    pub imbalance_mv: f64,
    /// Initial `WSetRvrtTms`, s (0 = never reverts).
    pub setpoint_revert_s: u32,
    /// Whether `WSetEna` starts enabled.
    pub setpoint_enabled: bool,
    /// PCS ramp, kW per second.
    pub ramp_kw_per_s: f64,
    /// Value of the pack, CNY, for the degradation cost.
    pub pack_value_cny: f64,
    /// SoH points the pack may lose before it is worth nothing, %.
    pub allowed_soh_loss_pct: f64,
    /// Cells in series.
    pub series_cells: u32,
    /// Calendar age of the cells at the start (first life included), days.
    pub calendar_age_days: f64,
    /// What the BMS reports as SoH minus the true SoH, points (a BMS configured for the
    /// pack's first life tends to report high).
    pub bms_soh_bias_pct: f64,
    /// SoH the BMS reports at the start, % (defaults to the true SoH plus the bias).
    pub bms_soh_reported_pct: Option<f64>,
    /// How often the BMS refreshes its reported SoH to the true SoH plus the bias, days;
    /// absent = every step (a live value), 0 = never.
    pub bms_soh_update_days: Option<f64>,
    /// Growth of the cell spread per equivalent full cycle at 25 C, mV; doubles for every
    /// 10 C hotter (the spread narrows the SoC window at both ends, see `imbalance_mv`).
    pub imbalance_growth_mv_per_efc: f64,
    /// Modules in series in the pack's one string (SunSpec 804 module groups).
    pub modules: u16,
}

/// The AC chargers (all alike).
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct ChargerParams {
    pub count: usize,
    /// 1 or 3.
    pub phases: u8,
    pub rating_a: f64,
    /// Initial safe current (register 1212), A.
    pub safe_current_a: f64,
    /// Validity of a max-current setpoint, s.
    pub validity_s: u32,
}

/// Dealership building load.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct BuildingParams {
    pub night_kw: f64,
    /// Business-hours level at opening and closing, kW.
    pub business_kw: f64,
    /// Extra at midday on top of `business_kw` (half sine over the opening hours), kW.
    pub business_peak_extra_kw: f64,
    /// Weekend business-hours load above night, as a share of the weekday one.
    pub weekend_factor: f64,
    pub open_hour: f64,
    pub close_hour: f64,
    /// Standard deviation of the AR(1) load noise, kW.
    pub noise_kw: f64,
    /// Expected workshop steps per weekday (half that at weekends).
    pub workshop_steps_per_day: f64,
    pub workshop_min_kw: f64,
    pub workshop_max_kw: f64,
    /// Mean duration of a workshop step, minutes.
    pub workshop_mean_min: f64,
}

/// Vehicle arrivals.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct VehicleParams {
    /// Multiplies every random arrival rate (0 = only scripted arrivals).
    pub arrival_scale: f64,
    pub staff_per_weekday: f64,
    pub staff_per_weekend_day: f64,
    pub customers_per_weekday: f64,
    pub customers_per_weekend_day: f64,
    pub demo_per_evening: f64,
    /// Share of cars with a 32 A three-phase on-board charger.
    pub share_32a_3ph: f64,
    /// Share with 16 A three-phase; the rest are 32 A single-phase.
    pub share_16a_3ph: f64,
    /// Mean energy wanted per session before the caps by dwell x power and by the battery,
    /// kWh (Weibull, shape 0.6); the default 20 gives about 12 kWh after the caps, with
    /// about 9 % of sessions above 33 kWh.
    pub energy_mean_kwh: f64,
    pub scripted: Vec<ScriptedArrival>,
    /// Cars the operator booked ahead, as the station's controller is told of them. The
    /// simulator does not use them (the cars that come are the scripted and random ones): a
    /// booking says what the operator expected, with the errors of a real appointment book.
    pub bookings: Vec<BookedCar>,
}

/// A car the operator booked: when it is due, how long it stays, and what the operator
/// knows of it.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct BookedCar {
    /// 1-based charger number; absent: whichever charger is free.
    pub charger: Option<usize>,
    /// Local `HH:MM[:SS]` on the start date, or `YYYY-MM-DD HH:MM[:SS]`.
    pub at: String,
    pub stay_h: f64,
    /// Energy the car is expected to want, kWh (absent: the controller's default).
    pub energy_kwh: Option<f64>,
    /// Power the car is expected to draw, kW (absent: the controller's default).
    pub max_kw: Option<f64>,
}

/// A car that arrives at a given time on a given charger.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ScriptedArrival {
    /// 1-based charger number (1 = `charger-1`).
    pub charger: usize,
    /// Local `HH:MM[:SS]` on the start date, or `YYYY-MM-DD HH:MM[:SS]`.
    pub at: String,
    pub battery_kwh: f64,
    pub soc_pct: f64,
    pub target_pct: f64,
    pub stay_h: f64,
    pub onboard_a: f64,
    #[serde(default = "three")]
    pub phases: u8,
}

fn three() -> u8 {
    3
}

/// Grid connection.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct GridParams {
    pub import_limit_kw: f64,
    pub export_limit_kw: f64,
}

/// Time-of-use tariff.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Tariff {
    /// Price outside every listed period, CNY/kWh.
    pub flat_cny_per_kwh: f64,
    pub periods: Vec<TariffPeriod>,
    pub export_cny_per_kwh: f64,
    /// Demand charge per kW of monthly peak 15-minute import.
    pub demand_cny_per_kw: f64,
}

/// The two values of the backtest's objective that no price list gives (see
/// `docs/reference-station.md`, section Scorecard).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveValues {
    /// Charged per kWh a car wanted and did not get by the time it left or the window ended,
    /// CNY/kWh: far above any energy price, so serving cars always pays.
    pub unmet_cny_per_kwh: f64,
    /// Credited per kWh stored in the battery at the end of the window and charged per kWh
    /// stored at the start, CNY/kWh. Unset: the lowest import price of the day divided by the
    /// battery's one-way efficiency, i.e. what it costs to put that kWh back in the valley.
    pub stored_cny_per_kwh: Option<f64>,
}

impl Default for ObjectiveValues {
    fn default() -> Self {
        ObjectiveValues {
            unmet_cny_per_kwh: 20.0,
            stored_cny_per_kwh: None,
        }
    }
}

/// A daily period [from, to) in local time; `to` < `from` wraps past midnight.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct TariffPeriod {
    pub name: String,
    pub from: String,
    pub to: String,
    pub cny_per_kwh: f64,
}

/// What a fault does: the same kinds as the control API's `POST /faults`.
pub use crate::faults::FaultKindName as FaultKind;

/// A scheduled fault.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Local `HH:MM[:SS]` on the start date, or `YYYY-MM-DD HH:MM[:SS]`.
    pub at: String,
    /// Device id as `docs/reference-station.md` names it (`pv`, `battery`, `charger-3`, ...).
    pub device: String,
    pub kind: FaultKind,
    pub duration_s: f64,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub exception_code: Option<u8>,
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
}

/// A fault resolved to UTC.
#[derive(Clone, Debug)]
pub struct ScheduledFault {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub spec: FaultSpec,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "sunny-weekday".to_string(),
            description: "Reference dealer station, sunny summer weekday".to_string(),
            site: Site::default(),
            start: Start::default(),
            weather: Weather::default(),
            pv: PvParams::default(),
            battery: BatteryParams::default(),
            chargers: ChargerParams::default(),
            building: BuildingParams::default(),
            vehicles: VehicleParams::default(),
            grid: GridParams::default(),
            tariff: Tariff::default(),
            objective: ObjectiveValues::default(),
            co2_kg_per_kwh: 0.5703,
            faults: Vec::new(),
        }
    }
}

impl Default for Site {
    fn default() -> Self {
        Site {
            lat_deg: 31.2,
            lon_deg: 121.5,
            timezone: "Asia/Shanghai".to_string(),
        }
    }
}

impl Default for Start {
    fn default() -> Self {
        Start {
            date: "2026-07-15".to_string(),
            time: "00:00".to_string(),
        }
    }
}

impl Default for Weather {
    fn default() -> Self {
        Weather {
            clearness_mean: 0.85,
            clearness_spread: 0.03,
            fixed_clearness: None,
            cloud_phi: 0.98,
            cloud_sigma: 0.01,
        }
    }
}

impl Default for PvParams {
    fn default() -> Self {
        PvParams {
            kwp: 150.0,
            inverter_ac_kw: 135.0,
            inverter_efficiency: 0.97,
            performance_ratio: 0.86,
            limit_ramp_pct_per_s: 10.0,
            limit_revert_s: 0,
        }
    }
}

impl Default for BatteryParams {
    fn default() -> Self {
        BatteryParams {
            nameplate_kwh: 500.0,
            soh_pct: 72.0,
            pcs_kw: 120.0,
            c_rate_cap: 0.5,
            initial_soc_pct: 50.0,
            soc_min_pct: 5.0,
            soc_max_pct: 95.0,
            soc_reserve_min_pct: 10.0,
            efficiency: 0.95,
            ambient_c: 25.0,
            initial_temp_c: None,
            imbalance_mv: 30.0,
            setpoint_revert_s: 60,
            setpoint_enabled: true,
            ramp_kw_per_s: 24.0,
            pack_value_cny: 60_000.0,
            allowed_soh_loss_pct: 12.0,
            series_cells: 192,
            calendar_age_days: 1826.0,
            bms_soh_bias_pct: 0.0,
            bms_soh_reported_pct: None,
            bms_soh_update_days: None,
            imbalance_growth_mv_per_efc: 0.05,
            modules: 12,
        }
    }
}

impl Default for ChargerParams {
    fn default() -> Self {
        ChargerParams {
            count: 8,
            phases: 3,
            rating_a: 32.0,
            safe_current_a: 6.0,
            validity_s: 60,
        }
    }
}

impl Default for BuildingParams {
    fn default() -> Self {
        BuildingParams {
            night_kw: 15.0,
            business_kw: 45.0,
            business_peak_extra_kw: 15.0,
            weekend_factor: 0.5,
            open_hour: 8.0,
            close_hour: 19.0,
            noise_kw: 1.5,
            workshop_steps_per_day: 4.0,
            workshop_min_kw: 10.0,
            workshop_max_kw: 20.0,
            workshop_mean_min: 45.0,
        }
    }
}

impl Default for VehicleParams {
    fn default() -> Self {
        VehicleParams {
            arrival_scale: 1.0,
            staff_per_weekday: 3.0,
            staff_per_weekend_day: 1.0,
            customers_per_weekday: 5.0,
            customers_per_weekend_day: 8.0,
            demo_per_evening: 2.0,
            share_32a_3ph: 0.6,
            share_16a_3ph: 0.25,
            energy_mean_kwh: 20.0,
            scripted: Vec::new(),
            bookings: Vec::new(),
        }
    }
}

impl Default for GridParams {
    fn default() -> Self {
        GridParams {
            import_limit_kw: 150.0,
            export_limit_kw: 100.0,
        }
    }
}

impl Default for Tariff {
    fn default() -> Self {
        let p = |name: &str, from: &str, to: &str, price: f64| TariffPeriod {
            name: name.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            cny_per_kwh: price,
        };
        Tariff {
            flat_cny_per_kwh: 0.70,
            periods: vec![
                p("valley", "23:00", "07:00", 0.30),
                p("peak", "10:00", "15:00", 1.10),
                p("peak", "18:00", "21:00", 1.10),
            ],
            export_cny_per_kwh: 0.39,
            demand_cny_per_kw: 40.0,
        }
    }
}

/// Parse "HH:MM" or "HH:MM:SS".
pub(crate) fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M"))
        .ok()
}

pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

impl Scenario {
    /// The reference station on a sunny summer weekday.
    pub fn reference() -> Scenario {
        Scenario::default()
    }

    /// Parse and validate a scenario from TOML text.
    pub fn from_toml_str(s: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(s)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::from_toml_str(&text)
    }

    /// The site's time zone (defaults to UTC only if validation was skipped and it is wrong).
    pub fn tz(&self) -> Tz {
        self.timezone().unwrap_or(chrono_tz::UTC)
    }

    fn timezone(&self) -> Result<Tz, String> {
        self.site.timezone.parse::<Tz>().map_err(|e| e.to_string())
    }

    /// Local start date.
    pub fn start_date(&self) -> NaiveDate {
        parse_date(&self.start.date).unwrap_or_default()
    }

    /// Resolve a local `HH:MM[:SS]` (on the start date) or `YYYY-MM-DD HH:MM[:SS]` to UTC.
    pub fn resolve_local(&self, s: &str) -> Option<DateTime<Utc>> {
        let s = s.trim();
        let naive = if let Some((d, t)) = s.split_once([' ', 'T']) {
            NaiveDateTime::new(parse_date(d)?, parse_time(t)?)
        } else {
            NaiveDateTime::new(parse_date(&self.start.date)?, parse_time(s)?)
        };
        self.tz()
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Start of the simulation, UTC.
    pub fn start_utc(&self) -> DateTime<Utc> {
        self.resolve_local(&format!("{} {}", self.start.date, self.start.time))
            .unwrap_or_default()
    }

    pub fn import_limit_w(&self) -> f64 {
        self.grid.import_limit_kw * 1000.0
    }

    pub fn export_limit_w(&self) -> f64 {
        self.grid.export_limit_kw * 1000.0
    }

    pub fn pv_rating_w(&self) -> f64 {
        self.pv.inverter_ac_kw * 1000.0
    }

    pub fn pcs_rating_w(&self) -> f64 {
        self.battery.pcs_kw * 1000.0
    }

    /// Usable energy at the start = nameplate x SoH, Wh.
    pub fn usable_wh(&self) -> f64 {
        self.battery.nameplate_kwh * 1000.0 * self.battery.soh_pct / 100.0
    }

    /// Import price at a local time of day, CNY/kWh.
    pub fn import_price_at(&self, local: NaiveTime) -> f64 {
        for p in &self.tariff.periods {
            if let (Some(from), Some(to)) = (parse_time(&p.from), parse_time(&p.to)) {
                let inside = if from <= to {
                    local >= from && local < to
                } else {
                    local >= from || local < to
                };
                if inside {
                    return p.cny_per_kwh;
                }
            }
        }
        self.tariff.flat_cny_per_kwh
    }

    /// Lowest import price of any minute of the day, CNY/kWh.
    pub fn lowest_import_price(&self) -> f64 {
        (0..1440u32)
            .filter_map(|m| NaiveTime::from_hms_opt(m / 60, m % 60, 0))
            .map(|t| self.import_price_at(t))
            .fold(f64::INFINITY, f64::min)
    }

    /// Value of a kWh stored in the battery in the backtest's objective, CNY/kWh: the
    /// configured `objective.stored_cny_per_kwh`, or the lowest import price of the day divided
    /// by the battery's one-way efficiency (the cost of storing it again in the valley).
    pub fn stored_energy_value_cny_per_kwh(&self) -> f64 {
        self.objective.stored_cny_per_kwh.unwrap_or_else(|| {
            self.lowest_import_price() / self.battery.efficiency.clamp(1e-3, 1.0)
        })
    }

    /// Every scheduled fault resolved to UTC (faults whose time does not parse are skipped;
    /// `validate` rejects them).
    pub fn scheduled_faults(&self) -> Vec<ScheduledFault> {
        self.faults
            .iter()
            .filter_map(|f| {
                let start = self.resolve_local(&f.at)?;
                let end = start + chrono::Duration::milliseconds((f.duration_s * 1000.0) as i64);
                Some(ScheduledFault {
                    start,
                    end,
                    spec: f.clone(),
                })
            })
            .collect()
    }

    /// Wire faults scheduled for `device` at `now` (the runtime applies these; the plant applies
    /// the physics fault `bms_alarm` itself).
    pub fn wire_faults(&self, device: &str, now: DateTime<Utc>) -> WireFaults {
        let mut out = WireFaults::default();
        for f in self.scheduled_faults() {
            if f.spec.device != device || now < f.start || now >= f.end {
                continue;
            }
            match f.spec.kind {
                FaultKind::Offline => out.offline = true,
                FaultKind::Latency => {
                    out.latency = f.spec.latency_ms.map(Duration::from_millis);
                }
                FaultKind::Exception => out.exception = f.spec.exception_code,
                FaultKind::Frozen => out.frozen = true,
                FaultKind::BadValue => {
                    if let (Some(p), Some(v)) = (f.spec.point.clone(), f.spec.value) {
                        out.bad_values.push((p, v));
                    }
                }
                FaultKind::BmsAlarm => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_reference_station() {
        let s = Scenario::from_toml_str("").unwrap();
        assert_eq!(s.battery.nameplate_kwh, 500.0);
        assert_eq!(s.chargers.count, 8);
        assert_eq!(s.grid.import_limit_kw, 150.0);
        assert_eq!(s.start_utc().to_rfc3339(), "2026-07-14T16:00:00+00:00");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = Scenario::from_toml_str("[battery]\nsoh = 3\n").unwrap_err();
        assert!(err.to_string().contains("soh"), "{err}");
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        let err = Scenario::from_toml_str("[battery]\nsoh_pct = 300\n").unwrap_err();
        assert!(err.to_string().contains("battery.soh_pct"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = Scenario::from_toml_str("[battery]\nsoh_pct = \"high\"\n").unwrap_err();
        assert!(err.to_string().contains("soh_pct"), "{err}");
        let err = Scenario::from_toml_str(
            "[[faults]]\nat = \"25:99\"\ndevice = \"pv\"\nkind = \"offline\"\nduration_s = 5\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("faults[0].at"), "{err}");
    }

    #[test]
    fn tariff_prices_follow_the_periods() {
        let s = Scenario::reference();
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(s.import_price_at(t(2, 0)), 0.30);
        assert_eq!(s.import_price_at(t(23, 30)), 0.30);
        assert_eq!(s.import_price_at(t(12, 0)), 1.10);
        assert_eq!(s.import_price_at(t(16, 0)), 0.70);
    }

    #[test]
    fn wire_faults_are_active_only_in_their_window() {
        let s = Scenario::from_toml_str(
            "[[faults]]\nat = \"10:00\"\ndevice = \"grid-meter\"\nkind = \"offline\"\nduration_s = 60\n",
        )
        .unwrap();
        let at = s.resolve_local("10:00:30").unwrap();
        assert!(s.wire_faults("grid-meter", at).offline);
        assert!(!s.wire_faults("pv", at).offline);
        let later = s.resolve_local("10:01:00").unwrap();
        assert!(!s.wire_faults("grid-meter", later).offline);
    }
}

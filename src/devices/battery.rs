//! SunSpec battery driver: reads model 802 (battery base), writes the PCS active power setpoint
//! through model 704 (WSetEna, WSetMod = 1 watts, WSet int32, WSetRvrtTms).
//! Offsets checked against pysunspec2 1.3.7 model JSON. Model 802 has no temperature point;
//! when the chain has 804 (lithium-ion string) its fixed block gives the highest and lowest
//! cell and the hottest and coolest module with their module numbers, else 803 (lithium-ion
//! bank) gives the module temperatures. A failing or implausible 803/804 read never fails the
//! 802 reading: the reading carries no cell report and says why (`cells_problem`).

use super::check;
use super::error::DeviceError;
use super::link::{Link, LinkConfig};
use super::sunspec::{self, encode_u32, unscale, ModelEntry};

// Model 802.
const B_WHRTG: u16 = 3;
const B_WCHARTEMAX: u16 = 4;
const B_WDISCHARTEMAX: u16 = 5;
const B_SOCMAX: u16 = 7;
const B_SOCMIN: u16 = 8;
const B_SOC: u16 = 11;
const B_SOH: u16 = 13;
const B_NCYC: u16 = 14;
const B_STATE: u16 = 22;
const B_EVT1: u16 = 26;
const B_V: u16 = 34;
const B_CELLVMAX: u16 = 37;
const B_CELLVMIN: u16 = 40;
const B_A: u16 = 44;
const B_ACHAMAX: u16 = 45;
const B_ADISCHAMAX: u16 = 46;
const B_W: u16 = 47;
const B_WHRTG_SF: u16 = 53;
const B_WCHADISCHAMAX_SF: u16 = 54;
const B_SOC_SF: u16 = 56;
const B_SOH_SF: u16 = 58;
const B_V_SF: u16 = 59;
const B_CELLV_SF: u16 = 60;
const B_A_SF: u16 = 61;
const B_AMAX_SF: u16 = 62;
const B_W_SF: u16 = 63;
// Model 704.
const C_WSETENA: u16 = 22;
const C_WSET: u16 = 24;
const C_WSETRVRT: u16 = 31;
const C_WSET_SF: u16 = 55;
// Model 803 (fixed block).
const K_MODTMPMAX: u16 = 4;
const K_MODTMPMAXMOD: u16 = 6;
const K_MODTMPMIN: u16 = 7;
const K_MODTMPMINMOD: u16 = 9;
const K_MODTMP_SF: u16 = 23;
const K_FIXED_LEN: u16 = 28;
// Model 804 (fixed block).
const S_CELLVMAX: u16 = 15;
const S_CELLVMAXMOD: u16 = 16;
const S_CELLVMIN: u16 = 17;
const S_CELLVMINMOD: u16 = 18;
const S_MODTMPMAX: u16 = 20;
const S_MODTMPMAXMOD: u16 = 21;
const S_MODTMPMIN: u16 = 22;
const S_MODTMPMINMOD: u16 = 23;
const S_CELLV_SF: u16 = 43;
const S_MODTMP_SF: u16 = 44;
const S_FIXED_LEN: u16 = 48;
/// Plausible module temperatures, C.
const MODULE_TEMP_C: (f64, f64) = (-40.0, 100.0);
/// WSetMod value selecting watts.
const WSETMOD_WATTS: u16 = 1;

/// Battery state (802 State).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BatteryState {
    /// 1
    Disconnected,
    /// 2
    Initializing,
    /// 3
    Connected,
    /// 4
    Standby,
    /// 5
    SocProtection,
    /// 6
    Suspending,
    /// 99
    Fault,
    /// Any other value.
    Other(u16),
}

impl BatteryState {
    /// Whether the PCS can follow a power setpoint in this state: connected, standing by, or
    /// in SoC protection (the BMS limits already stop the blocked direction). Disconnected,
    /// initialising, suspending, faulted or unknown states cannot.
    pub fn is_operating(self) -> bool {
        matches!(
            self,
            BatteryState::Connected | BatteryState::Standby | BatteryState::SocProtection
        )
    }

    /// From the enum16 value.
    pub fn from_raw(v: u16) -> Self {
        match v {
            1 => Self::Disconnected,
            2 => Self::Initializing,
            3 => Self::Connected,
            4 => Self::Standby,
            5 => Self::SocProtection,
            6 => Self::Suspending,
            99 => Self::Fault,
            o => Self::Other(o),
        }
    }
}

/// SunSpec model 802 `Evt1` bits, by position. The one list of the battery's alarm bits: the
/// daemon and the backtest both classify alarms through [`evt1::is_alarm`].
pub mod evt1 {
    pub const COMM_ERROR: u32 = 1 << 0;
    pub const OVER_TEMP_ALARM: u32 = 1 << 1;
    pub const OVER_TEMP_WARNING: u32 = 1 << 2;
    pub const UNDER_TEMP_ALARM: u32 = 1 << 3;
    pub const UNDER_TEMP_WARNING: u32 = 1 << 4;
    pub const OVER_CHARGE_CURRENT_ALARM: u32 = 1 << 5;
    pub const OVER_CHARGE_CURRENT_WARNING: u32 = 1 << 6;
    pub const OVER_DISCHARGE_CURRENT_ALARM: u32 = 1 << 7;
    pub const OVER_DISCHARGE_CURRENT_WARNING: u32 = 1 << 8;
    pub const OVER_VOLT_ALARM: u32 = 1 << 9;
    pub const OVER_VOLT_WARNING: u32 = 1 << 10;
    pub const UNDER_VOLT_ALARM: u32 = 1 << 11;
    pub const UNDER_VOLT_WARNING: u32 = 1 << 12;
    pub const UNDER_SOC_MIN_ALARM: u32 = 1 << 13;
    pub const UNDER_SOC_MIN_WARNING: u32 = 1 << 14;
    pub const OVER_SOC_MAX_ALARM: u32 = 1 << 15;
    pub const OVER_SOC_MAX_WARNING: u32 = 1 << 16;
    pub const VOLTAGE_IMBALANCE_WARNING: u32 = 1 << 17;
    pub const TEMPERATURE_IMBALANCE_ALARM: u32 = 1 << 18;
    pub const TEMPERATURE_IMBALANCE_WARNING: u32 = 1 << 19;
    pub const CONTACTOR_ERROR: u32 = 1 << 20;
    pub const FAN_ERROR: u32 = 1 << 21;
    pub const GROUND_FAULT: u32 = 1 << 22;
    pub const OPEN_DOOR_ERROR: u32 = 1 << 23;
    pub const CURRENT_IMBALANCE_WARNING: u32 = 1 << 24;
    pub const OTHER_ALARM: u32 = 1 << 25;
    pub const OTHER_WARNING: u32 = 1 << 26;
    pub const CONFIGURATION_ALARM: u32 = 1 << 28;
    pub const CONFIGURATION_WARNING: u32 = 1 << 29;

    /// The bits that stop the battery: alarms and errors, not warnings, and not the SoC-end
    /// alarms (the BMS limits already stop charge or discharge at the ends of the window).
    pub const ALARM_MASK: u32 = COMM_ERROR
        | OVER_TEMP_ALARM
        | UNDER_TEMP_ALARM
        | OVER_CHARGE_CURRENT_ALARM
        | OVER_DISCHARGE_CURRENT_ALARM
        | OVER_VOLT_ALARM
        | UNDER_VOLT_ALARM
        | TEMPERATURE_IMBALANCE_ALARM
        | CONTACTOR_ERROR
        | FAN_ERROR
        | GROUND_FAULT
        | OPEN_DOOR_ERROR
        | OTHER_ALARM
        | CONFIGURATION_ALARM;

    /// Whether `events` (an `Evt1` value) holds an alarm that stops the battery.
    pub fn is_alarm(events: u32) -> bool {
        events & ALARM_MASK != 0
    }
}

/// A module temperature that must be implemented and plausible.
fn temp(name: &str, v: Option<f64>) -> Result<f64, DeviceError> {
    let t = check::required(name, v)?;
    if !(MODULE_TEMP_C.0..=MODULE_TEMP_C.1).contains(&t) {
        return Err(DeviceError::bad_data(
            name,
            format!(
                "{t} C is outside {}..={} C",
                MODULE_TEMP_C.0, MODULE_TEMP_C.1
            ),
        ));
    }
    Ok(t)
}

/// One validated battery reading (discharge > 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatteryReading {
    /// State of charge %.
    pub soc_pct: f64,
    /// State of health %.
    pub soh_pct: Option<f64>,
    /// Highest SoC the BMS allows (802 SoCMax) %.
    pub soc_max_pct: Option<f64>,
    /// Lowest SoC the BMS allows (802 SoCMin) %.
    pub soc_min_pct: Option<f64>,
    /// Nameplate energy Wh (WHRtg).
    pub capacity_wh: Option<f64>,
    /// Maximum charge power W (WChaRteMax).
    pub max_charge_w: Option<f64>,
    /// Maximum discharge power W (WDisChaRteMax).
    pub max_discharge_w: Option<f64>,
    /// Maximum charge current A (AChaMax).
    pub max_charge_a: Option<f64>,
    /// Maximum discharge current A (ADisChaMax).
    pub max_discharge_a: Option<f64>,
    /// DC bus voltage V.
    pub voltage_v: Option<f64>,
    /// DC current A (sign flag applied).
    pub current_a: Option<f64>,
    /// DC power W (sign flag applied, discharge > 0).
    pub power_w: f64,
    /// Highest cell voltage V.
    pub cell_v_max: Option<f64>,
    /// Lowest cell voltage V.
    pub cell_v_min: Option<f64>,
    /// Operating state.
    pub state: Option<BatteryState>,
    /// Evt1 alarm bits (0 when not implemented).
    pub events: u32,
    /// Cycle count.
    pub cycles: Option<u32>,
    /// Cells and modules from 804 / 803, when the chain has them.
    pub cells: Option<Box<CellReport>>,
    /// Why 803/804 gave no report although present.
    pub cells_problem: Option<String>,
}

/// The weakest cells and the module temperatures from SunSpec 804 (or 803 for temperatures).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CellReport {
    /// The model read (804 or 803).
    pub model: u16,
    pub cell_v_max: Option<f64>,
    pub cell_v_max_module: Option<u16>,
    pub cell_v_min: Option<f64>,
    pub cell_v_min_module: Option<u16>,
    pub module_temp_max_c: f64,
    pub module_temp_max_module: Option<u16>,
    pub module_temp_min_c: f64,
    pub module_temp_min_module: Option<u16>,
}

/// Options of a battery.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryConfig {
    /// How to reach it.
    pub link: LinkConfig,
    /// Flip the sign of W/A read and of WSet written.
    pub invert: bool,
    /// Power rating W (`rating_kw`): bounds the plausible W whatever WChaRteMax/WDisChaRteMax
    /// report; without it those limits bound W.
    pub rating_w: Option<f64>,
}

impl BatteryConfig {
    /// No sign flip, rating from model 802.
    pub fn new(link: LinkConfig) -> Self {
        BatteryConfig {
            link,
            invert: false,
            rating_w: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BatteryMap {
    base: ModelEntry,
    control: Option<ModelEntry>,
    bank: Option<ModelEntry>,
    string: Option<ModelEntry>,
}

/// A SunSpec battery behind a PCS.
#[derive(Debug)]
pub struct Battery {
    link: Link,
    cfg: BatteryConfig,
    map: Option<BatteryMap>,
    limits_w: Option<(f64, f64)>,
    wset_sf: Option<i16>,
}

impl Battery {
    /// A driver that connects and discovers lazily.
    pub fn new(cfg: BatteryConfig) -> Self {
        Battery {
            link: Link::new(cfg.link.clone()),
            cfg,
            map: None,
            limits_w: None,
            wset_sf: None,
        }
    }

    /// The link (state, counters).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The link, to drop a connection whose request was abandoned.
    pub fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    /// Whether the model chain is known (discovery has run on this device).
    pub fn is_discovered(&self) -> bool {
        self.map.is_some()
    }

    /// Run SunSpec discovery now (it also runs lazily on first use).
    pub async fn discover(&mut self) -> Result<(), DeviceError> {
        let map = sunspec::discover(&mut self.link).await?;
        self.map = Some(BatteryMap {
            base: map.require(802)?,
            control: map.find(704),
            bank: map.find(803),
            string: map.find(804),
        });
        self.wset_sf = None;
        Ok(())
    }

    async fn map(&mut self) -> Result<BatteryMap, DeviceError> {
        if let Some(m) = self.map {
            return Ok(m);
        }
        self.discover().await?;
        self.map.ok_or(DeviceError::ModelMissing(802))
    }

    /// Read and validate model 802.
    ///
    /// `ModelMissing` from a read means the model chain changed; the next call discovers again.
    pub async fn read(&mut self) -> Result<BatteryReading, DeviceError> {
        let r = self.read_inner().await;
        if matches!(r, Err(DeviceError::ModelMissing(_))) {
            self.map = None;
        }
        r
    }

    async fn read_inner(&mut self) -> Result<BatteryReading, DeviceError> {
        let map = self.map().await?;
        let b = sunspec::read_model(&mut self.link, map.base).await?;
        let inv = self.cfg.invert;
        let soc_pct = check::percent("SoC", check::required("SoC", b.uint16_sf(B_SOC, B_SOC_SF))?)?;
        let soh_pct = check::optional("SoH", b.uint16_sf(B_SOH, B_SOH_SF))?
            .map(|v| check::percent("SoH", v))
            .transpose()?;
        let max_charge_w =
            check::optional("WChaRteMax", b.uint16_sf(B_WCHARTEMAX, B_WCHADISCHAMAX_SF))?;
        let max_discharge_w = check::optional(
            "WDisChaRteMax",
            b.uint16_sf(B_WDISCHARTEMAX, B_WCHADISCHAMAX_SF),
        )?;
        // The plausibility bound of W: the configured rating when there is one (a PCS that
        // reports absurd limits must not widen it), else the larger limit it reports.
        let rating_w = self.cfg.rating_w.or(match (max_charge_w, max_discharge_w) {
            (Some(c), Some(d)) => Some(c.max(d)),
            (c, d) => c.or(d),
        });
        let power = check::required("W", b.int16_sf(B_W, B_W_SF))?;
        let power_w = check::power_within("W", check::signed(power, inv), rating_w)?;
        if let (Some(c), Some(d)) = (max_charge_w, max_discharge_w) {
            self.limits_w = Some((c, d));
        }
        let soc_limit = |name: &str, off: u16| -> Result<Option<f64>, DeviceError> {
            check::optional(name, b.uint16_sf(off, B_SOC_SF))?
                .map(|v| check::percent(name, v))
                .transpose()
        };
        let soc_max_pct = soc_limit("SoCMax", B_SOCMAX)?;
        let soc_min_pct = soc_limit("SoCMin", B_SOCMIN)?;
        let (cells, cells_problem) = match self.read_cells(map).await {
            Ok(c) => (c, None),
            Err(e @ DeviceError::ModelMissing(_)) => return Err(e),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(BatteryReading {
            cells,
            cells_problem,
            soc_pct,
            soh_pct,
            soc_max_pct,
            soc_min_pct,
            capacity_wh: check::optional("WHRtg", b.uint16_sf(B_WHRTG, B_WHRTG_SF))?,
            max_charge_w,
            max_discharge_w,
            max_charge_a: check::optional("AChaMax", b.uint16_sf(B_ACHAMAX, B_AMAX_SF))?,
            max_discharge_a: check::optional("ADisChaMax", b.uint16_sf(B_ADISCHAMAX, B_AMAX_SF))?,
            voltage_v: check::optional("V", b.uint16_sf(B_V, B_V_SF))?,
            current_a: check::optional("A", b.int16_sf(B_A, B_A_SF))?
                .map(|a| check::signed(a, inv)),
            power_w,
            cell_v_max: check::optional("CellVMax", b.uint16_sf(B_CELLVMAX, B_CELLV_SF))?,
            cell_v_min: check::optional("CellVMin", b.uint16_sf(B_CELLVMIN, B_CELLV_SF))?,
            state: b.uint16(B_STATE).map(BatteryState::from_raw),
            events: b.uint32(B_EVT1).unwrap_or(0),
            cycles: b.uint32(B_NCYC),
        })
    }

    /// The fixed block of 804, else of 803 (`None` when the chain has neither).
    async fn read_cells(
        &mut self,
        map: BatteryMap,
    ) -> Result<Option<Box<CellReport>>, DeviceError> {
        if let Some(e) = map.string {
            let b = self.read_fixed(e, S_FIXED_LEN).await?;
            let id = |off: u16| b.uint16(off);
            return Ok(Some(Box::new(CellReport {
                model: 804,
                cell_v_max: check::optional("804 CellVMax", b.uint16_sf(S_CELLVMAX, S_CELLV_SF))?,
                cell_v_max_module: id(S_CELLVMAXMOD),
                cell_v_min: check::optional("804 CellVMin", b.uint16_sf(S_CELLVMIN, S_CELLV_SF))?,
                cell_v_min_module: id(S_CELLVMINMOD),
                module_temp_max_c: temp("804 ModTmpMax", b.int16_sf(S_MODTMPMAX, S_MODTMP_SF))?,
                module_temp_max_module: id(S_MODTMPMAXMOD),
                module_temp_min_c: temp("804 ModTmpMin", b.int16_sf(S_MODTMPMIN, S_MODTMP_SF))?,
                module_temp_min_module: id(S_MODTMPMINMOD),
            })));
        }
        let Some(e) = map.bank else {
            return Ok(None);
        };
        let b = self.read_fixed(e, K_FIXED_LEN).await?;
        Ok(Some(Box::new(CellReport {
            model: 803,
            cell_v_max: None,
            cell_v_max_module: None,
            cell_v_min: None,
            cell_v_min_module: None,
            module_temp_max_c: temp("803 ModTmpMax", b.int16_sf(K_MODTMPMAX, K_MODTMP_SF))?,
            module_temp_max_module: b.uint16(K_MODTMPMAXMOD),
            module_temp_min_c: temp("803 ModTmpMin", b.int16_sf(K_MODTMPMIN, K_MODTMP_SF))?,
            module_temp_min_module: b.uint16(K_MODTMPMINMOD),
        })))
    }

    /// The first `len` registers of a model (ID and L included), refused when the model is
    /// shorter or no longer there.
    async fn read_fixed(
        &mut self,
        e: ModelEntry,
        len: u16,
    ) -> Result<sunspec::ModelBlock, DeviceError> {
        let addr = e.at(0, len)?;
        let regs = self.link.read_holding(addr, len).await?;
        if regs.first() != Some(&e.id) {
            return Err(DeviceError::ModelMissing(e.id));
        }
        Ok(sunspec::ModelBlock::from_regs(e, regs))
    }

    async fn control(&mut self) -> Result<ModelEntry, DeviceError> {
        self.map()
            .await?
            .control
            .ok_or(DeviceError::ModelMissing(704))
    }

    /// Command the PCS to `w` watts (discharge > 0): writes WSetEna = 1, WSetMod = 1 (watts) and
    /// WSet in one request. Refuses values beyond the last read WChaRteMax/WDisChaRteMax.
    pub async fn set_power_w(&mut self, w: f64) -> Result<(), DeviceError> {
        if !w.is_finite() {
            return Err(DeviceError::InvalidRequest(format!("power {w} W")));
        }
        if let Some((cha, dis)) = self.limits_w {
            if w > dis || -w > cha {
                return Err(DeviceError::InvalidRequest(format!(
                    "power {w} W outside -{cha}..={dis} W"
                )));
            }
        }
        let e = self.control().await?;
        let raw = self.wset_raw(e, w).await?;
        let [hi, lo] = encode_u32(raw as u32);
        self.link
            .write_multiple(e.at(C_WSETENA, 4)?, &[1, WSETMOD_WATTS, hi, lo])
            .await
    }

    async fn wset_raw(&mut self, e: ModelEntry, w: f64) -> Result<i32, DeviceError> {
        // The scale factor is read once per discovery; a not implemented WSet_SF means 0.
        let sf = match self.wset_sf {
            Some(sf) => sf,
            None => {
                let sf_reg = self.link.read_holding(e.at(C_WSET_SF, 1)?, 1).await?[0];
                let sf = sunspec::decode_sunssf(sf_reg).unwrap_or(0);
                self.wset_sf = Some(sf);
                sf
            }
        };
        let raw = unscale(check::signed(w, self.cfg.invert), sf);
        if raw <= f64::from(i32::MIN) || raw > f64::from(i32::MAX) {
            return Err(DeviceError::InvalidRequest(format!(
                "power {w} W does not fit WSet with scale factor {sf}"
            )));
        }
        Ok(raw as i32)
    }

    /// Set WSetRvrtTms and read it back: the PCS reverts to its default when WSet is not
    /// rewritten in `revert_s`. A PCS that does not hold the value is refused.
    pub async fn configure_fallback(&mut self, revert_s: u32) -> Result<(), DeviceError> {
        let e = self.control().await?;
        let addr = e.at(C_WSETRVRT, 2)?;
        self.link
            .write_multiple(addr, &encode_u32(revert_s))
            .await?;
        sunspec::verify_written(&mut self.link, "WSetRvrtTms", addr, 2, revert_s).await
    }

    /// Write WSet = 0 (no charge, no discharge).
    pub async fn safe(&mut self) -> Result<(), DeviceError> {
        let e = self.control().await?;
        self.link.write_multiple(e.at(C_WSET, 2)?, &[0, 0]).await
    }
}

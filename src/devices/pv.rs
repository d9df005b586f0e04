//! SunSpec PV inverter driver.
//!
//! Reads model 101/102/103 (integer + scale factors) or 111/112/113 (float32) for W, WH, St, Hz
//! and DCW, model 120 for WRtg, and limits active power through model 123 (WMaxLimPct,
//! WMaxLim_Ena, WMaxLimPct_RvrtTms) or, when 123 is absent, model 704 (WMaxLimPctEna,
//! WMaxLimPct, WMaxLimPctRvrtTms). Offsets checked against pysunspec2 1.3.7 model JSON.

use super::check;
use super::error::DeviceError;
use super::link::{Link, LinkConfig};
use super::sunspec::{self, encode_u32, unscale, ModelEntry};

const INT_MODELS: [u16; 3] = [101, 102, 103];
const FLOAT_MODELS: [u16; 3] = [111, 112, 113];

// Models 101-103.
const I_W: u16 = 14;
const I_W_SF: u16 = 15;
const I_HZ: u16 = 16;
const I_HZ_SF: u16 = 17;
const I_WH: u16 = 24;
const I_WH_SF: u16 = 26;
const I_DCW: u16 = 31;
const I_DCW_SF: u16 = 32;
const I_ST: u16 = 38;
// Models 111-113.
const F_W: u16 = 22;
const F_HZ: u16 = 24;
const F_WH: u16 = 32;
const F_DCW: u16 = 38;
const F_ST: u16 = 48;
// Model 120.
const N_WRTG: u16 = 3;
const N_WRTG_SF: u16 = 4;
// Model 123.
const C123_WMAXLIMPCT: u16 = 5;
const C123_RVRT: u16 = 7;
const C123_ENA: u16 = 9;
const C123_SF: u16 = 23;
// Model 704.
const C704_ENA: u16 = 14;
const C704_WMAXLIMPCT: u16 = 15;
const C704_RVRT: u16 = 18;
const C704_SF: u16 = 54;

/// Operating state (SunSpec St of models 101-113).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum InverterStatus {
    /// 1
    Off,
    /// 2
    Sleeping,
    /// 3
    Starting,
    /// 4, tracking the maximum power point
    Mppt,
    /// 5, power limited
    Throttled,
    /// 6
    ShuttingDown,
    /// 7
    Fault,
    /// 8
    Standby,
    /// Any other value.
    Other(u16),
}

impl InverterStatus {
    /// From the St enum16 value.
    pub fn from_raw(v: u16) -> Self {
        match v {
            1 => Self::Off,
            2 => Self::Sleeping,
            3 => Self::Starting,
            4 => Self::Mppt,
            5 => Self::Throttled,
            6 => Self::ShuttingDown,
            7 => Self::Fault,
            8 => Self::Standby,
            o => Self::Other(o),
        }
    }
}

/// One validated inverter reading (PV generation > 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PvReading {
    /// AC active power W (sign flag applied).
    pub power_w: f64,
    /// Lifetime AC energy Wh, if the device accumulates it.
    pub energy_wh: Option<f64>,
    /// Nameplate rating W (model 120 WRtg, else the configured rating).
    pub rating_w: f64,
    /// Active power limit in % of WMax: the set value when the limit is enabled, 100 when it is
    /// disabled, `None` without a control model.
    pub limit_pct: Option<f64>,
    /// Operating state.
    pub status: Option<InverterStatus>,
    /// DC power W, if reported.
    pub dc_power_w: Option<f64>,
    /// AC frequency Hz, if reported.
    pub frequency_hz: Option<f64>,
}

/// Options of a PV inverter.
#[derive(Debug, Clone, PartialEq)]
pub struct PvConfig {
    /// How to reach it.
    pub link: LinkConfig,
    /// Flip the sign of W/DCW read from the device.
    pub invert: bool,
    /// Rating used when model 120 is absent (W).
    pub rating_w: Option<f64>,
}

impl PvConfig {
    /// No sign flip, rating from model 120.
    pub fn new(link: LinkConfig) -> Self {
        PvConfig {
            link,
            invert: false,
            rating_w: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitModel {
    M123(ModelEntry),
    M704(ModelEntry),
}

#[derive(Debug, Clone, Copy)]
struct PvMap {
    inverter: ModelEntry,
    float: bool,
    nameplate: Option<ModelEntry>,
    limit: Option<LimitModel>,
}

/// A SunSpec PV inverter.
#[derive(Debug)]
pub struct PvInverter {
    link: Link,
    cfg: PvConfig,
    map: Option<PvMap>,
    rating_w: Option<f64>,
}

impl PvInverter {
    /// A driver that connects and discovers lazily.
    pub fn new(cfg: PvConfig) -> Self {
        PvInverter {
            link: Link::new(cfg.link.clone()),
            cfg,
            map: None,
            rating_w: None,
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
        let (inverter, float) = match map.find_any(&INT_MODELS) {
            Some(m) => (m, false),
            None => match map.find_any(&FLOAT_MODELS) {
                Some(m) => (m, true),
                None => return Err(DeviceError::ModelMissing(103)),
            },
        };
        let limit = map
            .find(123)
            .map(LimitModel::M123)
            .or_else(|| map.find(704).map(LimitModel::M704));
        self.map = Some(PvMap {
            inverter,
            float,
            nameplate: map.find(120),
            limit,
        });
        self.rating_w = None;
        Ok(())
    }

    async fn map(&mut self) -> Result<PvMap, DeviceError> {
        if let Some(m) = self.map {
            return Ok(m);
        }
        self.discover().await?;
        self.map.ok_or(DeviceError::ModelMissing(103))
    }

    async fn rating(&mut self, map: &PvMap) -> Result<f64, DeviceError> {
        if let Some(r) = self.rating_w {
            return Ok(r);
        }
        let from_model = match map.nameplate {
            Some(entry) => {
                let b = sunspec::read_model(&mut self.link, entry).await?;
                check::optional("WRtg", b.uint16_sf(N_WRTG, N_WRTG_SF))?
            }
            None => None,
        };
        let r = from_model
            .or(self.cfg.rating_w)
            .filter(|r| *r > 0.0)
            .ok_or_else(|| DeviceError::bad_data("WRtg", "no rating in model 120 nor in config"))?;
        self.rating_w = Some(r);
        Ok(r)
    }

    /// Read and validate power, energy, rating, limit and state.
    ///
    /// `ModelMissing` from a read means the model chain changed; the next call discovers again.
    pub async fn read(&mut self) -> Result<PvReading, DeviceError> {
        let r = self.read_inner().await;
        if matches!(r, Err(DeviceError::ModelMissing(_))) {
            self.map = None;
        }
        r
    }

    async fn read_inner(&mut self) -> Result<PvReading, DeviceError> {
        let map = self.map().await?;
        let rating_w = self.rating(&map).await?;
        let b = sunspec::read_model(&mut self.link, map.inverter).await?;
        let (w, wh, hz, dcw, st) = if map.float {
            (
                b.float(F_W),
                b.float(F_WH),
                b.float(F_HZ),
                b.float(F_DCW),
                b.uint16(F_ST),
            )
        } else {
            (
                b.int16_sf(I_W, I_W_SF),
                b.acc32_sf(I_WH, I_WH_SF),
                b.uint16_sf(I_HZ, I_HZ_SF),
                b.int16_sf(I_DCW, I_DCW_SF),
                b.uint16(I_ST),
            )
        };
        let power = check::required("W", w)?;
        let power_w =
            check::power_within("W", check::signed(power, self.cfg.invert), Some(rating_w))?;
        let dc_power_w = check::optional("DCW", dcw)?
            .map(|p| check::signed(p, self.cfg.invert))
            .map(|p| check::power_within("DCW", p, Some(rating_w)))
            .transpose()?;
        let energy_wh = check::counter("WH", wh)?;
        let limit_pct = self.read_limit(&map).await?;
        Ok(PvReading {
            power_w,
            energy_wh,
            rating_w,
            limit_pct,
            status: st.map(InverterStatus::from_raw),
            dc_power_w,
            frequency_hz: check::optional("Hz", hz)?,
        })
    }

    async fn read_limit(&mut self, map: &PvMap) -> Result<Option<f64>, DeviceError> {
        let (entry, pct_off, sf_off, ena_off) = match map.limit {
            None => return Ok(None),
            Some(LimitModel::M123(e)) => (e, C123_WMAXLIMPCT, C123_SF, C123_ENA),
            Some(LimitModel::M704(e)) => (e, C704_WMAXLIMPCT, C704_SF, C704_ENA),
        };
        let b = sunspec::read_model(&mut self.link, entry).await?;
        if b.uint16(ena_off) != Some(1) {
            return Ok(Some(100.0));
        }
        let pct = check::required("WMaxLimPct", b.uint16_sf(pct_off, sf_off))?;
        Ok(Some(check::percent("WMaxLimPct", pct)?))
    }

    /// Limit active power to `pct` % of WMax and enable the limit.
    pub async fn set_limit_pct(&mut self, pct: f64) -> Result<(), DeviceError> {
        if !pct.is_finite() || !(0.0..=100.0).contains(&pct) {
            return Err(DeviceError::InvalidRequest(format!(
                "limit {pct} % outside 0..=100"
            )));
        }
        let map = self.map().await?;
        let Some(limit) = map.limit else {
            return Err(DeviceError::ModelMissing(123));
        };
        let (entry, sf_off) = match limit {
            LimitModel::M123(e) => (e, C123_SF),
            LimitModel::M704(e) => (e, C704_SF),
        };
        // WMaxLimPct_SF is read on every write (limits are written rarely); a not implemented
        // scale factor means 0.
        let sf_addr = entry.at(sf_off, 1)?;
        let sf = sunspec::decode_sunssf(self.link.read_holding(sf_addr, 1).await?[0]).unwrap_or(0);
        let raw = unscale(pct, sf);
        if !(0.0..65535.0).contains(&raw) {
            return Err(DeviceError::InvalidRequest(format!(
                "limit {pct} % does not fit WMaxLimPct with scale factor {sf}"
            )));
        }
        let raw = raw as u16;
        match limit {
            LimitModel::M123(e) => {
                self.link
                    .write_single(e.at(C123_WMAXLIMPCT, 1)?, raw)
                    .await?;
                self.link.write_single(e.at(C123_ENA, 1)?, 1).await
            }
            LimitModel::M704(e) => {
                self.link
                    .write_multiple(e.at(C704_ENA, 2)?, &[1, raw])
                    .await
            }
        }
    }

    /// Set the revert timeout of the limit: the inverter drops the limit when it is not
    /// rewritten within `revert_s` seconds.
    pub async fn configure_fallback(&mut self, revert_s: u32) -> Result<(), DeviceError> {
        let map = self.map().await?;
        match map.limit {
            None => Err(DeviceError::ModelMissing(123)),
            Some(LimitModel::M123(e)) => {
                let v = u16::try_from(revert_s).map_err(|_| {
                    DeviceError::InvalidRequest(format!("revert {revert_s} s exceeds 65535 s"))
                })?;
                let addr = e.at(C123_RVRT, 1)?;
                self.link.write_single(addr, v).await?;
                sunspec::verify_written(&mut self.link, "WMaxLimPct_RvrtTms", addr, 1, revert_s)
                    .await
            }
            Some(LimitModel::M704(e)) => {
                let addr = e.at(C704_RVRT, 2)?;
                self.link
                    .write_multiple(addr, &encode_u32(revert_s))
                    .await?;
                sunspec::verify_written(&mut self.link, "WMaxLimPctRvrtTms", addr, 2, revert_s)
                    .await
            }
        }
    }
}

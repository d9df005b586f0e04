//! SunSpec meter driver: models 201-204 (integer + scale factors) or 211-214 (float32).
//! Offsets checked against pysunspec2 1.3.7 model JSON (the four layouts of each family agree).

use super::check;
use super::error::DeviceError;
use super::link::{Link, LinkConfig};
use super::sunspec::{self, ModelEntry};

const INT_MODELS: [u16; 4] = [201, 202, 203, 204];
const FLOAT_MODELS: [u16; 4] = [211, 212, 213, 214];

const I_HZ: u16 = 16;
const I_HZ_SF: u16 = 17;
const I_W: u16 = 18;
const I_WPH: [u16; 3] = [19, 20, 21];
const I_W_SF: u16 = 22;
const I_WHEXP: u16 = 38;
const I_WHIMP: u16 = 46;
const I_WH_SF: u16 = 54;

const F_HZ: u16 = 26;
const F_W: u16 = 28;
const F_WPH: [u16; 3] = [30, 32, 34];
const F_WHEXP: u16 = 60;
const F_WHIMP: u16 = 68;

/// One validated meter reading. With `invert` the sign of powers is flipped and import/export
/// counters are swapped, so that import > 0 from the controller's point of view.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MeterReading {
    /// Total active power W.
    pub power_w: f64,
    /// Per-phase active power W.
    pub phase_w: [Option<f64>; 3],
    /// Frequency Hz.
    pub frequency_hz: Option<f64>,
    /// Imported energy Wh.
    pub import_wh: Option<f64>,
    /// Exported energy Wh.
    pub export_wh: Option<f64>,
}

/// Options of a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterConfig {
    /// How to reach it.
    pub link: LinkConfig,
    /// Flip power signs and swap import/export.
    pub invert: bool,
    /// Rating W (e.g. the grid connection) for plausibility checks.
    pub rating_w: Option<f64>,
}

impl MeterConfig {
    /// No sign flip, no rating check.
    pub fn new(link: LinkConfig) -> Self {
        MeterConfig {
            link,
            invert: false,
            rating_w: None,
        }
    }
}

/// A SunSpec meter.
#[derive(Debug)]
pub struct Meter {
    link: Link,
    cfg: MeterConfig,
    model: Option<(ModelEntry, bool)>,
}

impl Meter {
    /// A driver that connects and discovers lazily.
    pub fn new(cfg: MeterConfig) -> Self {
        Meter {
            link: Link::new(cfg.link.clone()),
            cfg,
            model: None,
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
        self.model.is_some()
    }

    /// Run SunSpec discovery now (it also runs lazily on first use).
    pub async fn discover(&mut self) -> Result<(), DeviceError> {
        let map = sunspec::discover(&mut self.link).await?;
        let found = match map.find_any(&INT_MODELS) {
            Some(m) => (m, false),
            None => (
                map.find_any(&FLOAT_MODELS)
                    .ok_or(DeviceError::ModelMissing(203))?,
                true,
            ),
        };
        self.model = Some(found);
        Ok(())
    }

    /// Read and validate the meter.
    ///
    /// `ModelMissing` from a read means the model chain changed; the next call discovers again.
    pub async fn read(&mut self) -> Result<MeterReading, DeviceError> {
        let r = self.read_inner().await;
        if matches!(r, Err(DeviceError::ModelMissing(_))) {
            self.model = None;
        }
        r
    }

    async fn read_inner(&mut self) -> Result<MeterReading, DeviceError> {
        let (entry, float) = match self.model {
            Some(m) => m,
            None => {
                self.discover().await?;
                self.model.ok_or(DeviceError::ModelMissing(203))?
            }
        };
        let b = sunspec::read_model(&mut self.link, entry).await?;
        let (w, ph, hz, exp, imp) = if float {
            (
                b.float(F_W),
                F_WPH.map(|o| b.float(o)),
                b.float(F_HZ),
                b.float(F_WHEXP),
                b.float(F_WHIMP),
            )
        } else {
            (
                b.int16_sf(I_W, I_W_SF),
                I_WPH.map(|o| b.int16_sf(o, I_W_SF)),
                b.int16_sf(I_HZ, I_HZ_SF),
                b.acc32_sf(I_WHEXP, I_WH_SF),
                b.acc32_sf(I_WHIMP, I_WH_SF),
            )
        };
        let inv = self.cfg.invert;
        let power_w = check::power_within(
            "W",
            check::signed(check::required("W", w)?, inv),
            self.cfg.rating_w,
        )?;
        let names = ["WphA", "WphB", "WphC"];
        let mut phase_w = [None; 3];
        for i in 0..3 {
            phase_w[i] = check::optional(names[i], ph[i])?
                .map(|p| check::power_within(names[i], check::signed(p, inv), self.cfg.rating_w))
                .transpose()?;
        }
        let exp = check::counter("TotWhExp", exp)?;
        let imp = check::counter("TotWhImp", imp)?;
        let (import_wh, export_wh) = if inv { (exp, imp) } else { (imp, exp) };
        Ok(MeterReading {
            power_w,
            phase_w,
            frequency_hz: check::optional("Hz", hz)?,
            import_wh,
            export_wh,
        })
    }
}

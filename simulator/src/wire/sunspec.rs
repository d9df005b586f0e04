//! SunSpec devices: the PV inverter (models 1, 103, 120, 123), the battery (models 1, 802, 704)
//! and the two meters (models 1, 203).
//!
//! Layout: "SunS" at PDU address 40000, the first model at 40002, each next model right after
//! the previous one (`addr + 2 + L`), then the end marker `0xFFFF, 0`. Served on unit id 1.
//!
//! Scale factors are fixed per device (derived from its constant ratings, so they never change
//! while the simulator runs):
//! - currents SF -1, voltages SF -1, frequency SF -2, temperatures SF -1, SoC/SoH SF -1,
//!   cell voltages SF -3, energy accumulators SF 0;
//! - PV `W`/`DCW`: smallest SF >= 0 such that 1.2 x `WRtg` fits an int16; `WRtg` the smallest
//!   that fits a uint16; `WMaxLimPct` SF 0 (raw value = percent);
//! - battery `W`: 1.2 x PCS rating in an int16; `WChaRteMax`/`WDisChaRteMax` the larger of the
//!   PCS rating and the nameplate Wh (a 1 C bound) in a uint16; `WHRtg` the nameplate in a
//!   uint16; `WSet` SF 0 (int32 watts);
//! - meters `W`/`WphX` SF 1 (+-327 kW, 10 W resolution).
//!
//! Points the view has no value for carry the SunSpec "not implemented" marker of their type.
//! Mandatory event bitfields without a source (`Evt2`, 203 `Evt`) read 0 (no events).
//! An energy accumulator (acc32) that is exactly 0 Wh is indistinguishable from the acc32
//! "not implemented" marker (0): pysunspec2 shows it as `None` (e.g. the building meter's
//! `TotWhExp` when nothing was ever exported). Accumulators saturate at 2^32 - 1 Wh.
//!
//! Writable points (everything else answers 0x02 to a write, including points the SunSpec
//! model marks RW, such as model 1 `DA` or 802 `SetOp`): 123 `Conn` (1 only), `WMaxLimPct`
//! (0..=100), `WMaxLimPct_RvrtTms`, `WMaxLim_Ena` (0/1); 802 `SoCRsvMin` (0..=100 %); 704
//! `WSetEna` (0/1), `WSetMod` (1 only), `WSet`, `WSetRvrtTms`.

use super::encode::sf_for;
use super::image::{Block, Image, UnitImage};
use super::lithium;
use super::models::{
    ModelBuf, ModelDef, BATTERY, COMMON, CONTROLS, DER_CTL_AC, INVERTER_3P, METER_WYE, NAMEPLATE,
};
use super::writes::{Field, FieldKind};
use crate::view::{BatteryView, MeterView, PvStatus, PvView};

/// PDU address of the "SunS" marker.
pub const SUNSPEC_BASE: u16 = 40000;
/// The one unit id the SunSpec devices answer.
pub const SUNSPEC_UNIT: u8 = 1;

pub(crate) const PV_MODELS: &[&ModelDef] = &[&COMMON, &INVERTER_3P, &NAMEPLATE, &CONTROLS];
pub(crate) const BATTERY_MODELS: &[&ModelDef] = &[&COMMON, &BATTERY, &DER_CTL_AC];

/// Address of each model's ID register, in chain order.
pub(crate) fn model_addresses(models: &[&ModelDef]) -> Vec<u16> {
    let mut addr = SUNSPEC_BASE + 2;
    models
        .iter()
        .map(|m| {
            let at = addr;
            addr += 2 + m.len;
            at
        })
        .collect()
}

/// Address of point `name` of model `id` in the chain `models`.
pub(crate) fn point_address(models: &[&ModelDef], id: u16, name: &str) -> Option<u16> {
    let addrs = model_addresses(models);
    models
        .iter()
        .zip(addrs)
        .find(|(m, _)| m.id == id)
        .and_then(|(m, base)| m.point(name).map(|(off, _)| base + off))
}

fn chain(models: Vec<ModelBuf>) -> Image {
    let mut words = vec![0x5375, 0x6E53];
    for m in models {
        words.extend(m.into_words());
    }
    words.extend([0xFFFF, 0]);
    Image {
        units: vec![UnitImage {
            unit: SUNSPEC_UNIT,
            blocks: vec![Block {
                start: SUNSPEC_BASE,
                words,
            }],
        }],
    }
}

fn common(model: &str, serial: &str) -> ModelBuf {
    let mut m = ModelBuf::new(&COMMON);
    m.string("Mn", "station-sim")
        .string("Md", model)
        .string("Vr", env!("CARGO_PKG_VERSION"))
        .string("SN", serial)
        .int("DA", u32::from(SUNSPEC_UNIT));
    m
}

/// Renders the PV inverter.
pub(crate) fn render_pv(pv: &PvView, serial: &str) -> Image {
    let w_sf = sf_for(pv.rating_w * 1.2, 32767.0);
    let rtg_sf = sf_for(pv.rating_w, 65534.0);

    let mut inv = ModelBuf::new(&INVERTER_3P);
    inv.scaled("A", pv.current_a.iter().sum(), -1)
        .scaled("AphA", pv.current_a[0], -1)
        .scaled("AphB", pv.current_a[1], -1)
        .scaled("AphC", pv.current_a[2], -1)
        .sf("A_SF", -1)
        .scaled("PhVphA", pv.voltage_v[0], -1)
        .scaled("PhVphB", pv.voltage_v[1], -1)
        .scaled("PhVphC", pv.voltage_v[2], -1)
        .sf("V_SF", -1)
        .scaled("W", pv.power_w, w_sf)
        .sf("W_SF", w_sf)
        .scaled("Hz", pv.frequency_hz, -2)
        .sf("Hz_SF", -2)
        .scaled("WH", pv.energy_wh, 0)
        .sf("WH_SF", 0)
        .scaled("DCW", pv.dc_power_w, w_sf)
        .sf("DCW_SF", w_sf)
        .scaled("TmpCab", pv.cabinet_temp_c, -1)
        .sf("Tmp_SF", -1)
        .int("St", pv.status as u32)
        .int("Evt1", 0)
        .int("Evt2", 0);

    let mut plate = ModelBuf::new(&NAMEPLATE);
    plate
        .int("DERTyp", 4)
        .scaled("WRtg", pv.rating_w, rtg_sf)
        .sf("WRtg_SF", rtg_sf);

    let mut ctl = ModelBuf::new(&CONTROLS);
    ctl.int("Conn", u32::from(pv.status != PvStatus::Off))
        .scaled("WMaxLimPct", pv.limit_pct, 0)
        .sf("WMaxLimPct_SF", 0)
        .int("WMaxLimPct_WinTms", 0)
        .int("WMaxLimPct_RvrtTms", pv.limit_revert_s)
        .int("WMaxLimPct_RmpTms", 0)
        .int("WMaxLim_Ena", u32::from(pv.limit_enabled));

    chain(vec![common("PV inverter", serial), inv, plate, ctl])
}

/// Scale factor of the battery's `WChaRteMax` / `WDisChaRteMax`.
fn battery_rate_sf(b: &BatteryView) -> i16 {
    sf_for(b.pcs_rating_w.max(b.nameplate_wh), 65534.0)
}

/// Renders the battery (BMS model 802 + PCS controls model 704).
pub(crate) fn render_battery(b: &BatteryView, serial: &str) -> Image {
    let wh_sf = sf_for(b.nameplate_wh, 65534.0);
    let rate_sf = battery_rate_sf(b);
    let w_sf = sf_for(b.pcs_rating_w * 1.2, 32767.0);

    let mut bat = ModelBuf::new(&BATTERY);
    bat.scaled("WHRtg", b.nameplate_wh, wh_sf)
        .sf("WHRtg_SF", wh_sf)
        .scaled("WChaRteMax", b.max_charge_w, rate_sf)
        .scaled("WDisChaRteMax", b.max_discharge_w, rate_sf)
        .sf("WChaDisChaMax_SF", rate_sf)
        .scaled("SoCRsvMin", b.soc_reserve_min_pct, -1)
        .scaled("SoC", b.soc_pct, -1)
        .sf("SoC_SF", -1)
        .scaled("SoH", b.soh_pct, -1)
        .sf("SoH_SF", -1)
        .int("NCyc", b.cycles)
        .int("State", b.state as u32)
        .int("Evt1", b.alarms)
        .int("Evt2", 0)
        .scaled("V", b.voltage_v, -1)
        .sf("V_SF", -1)
        .scaled("CellVMax", b.cell_v_max, -3)
        .scaled("CellVMin", b.cell_v_min, -3)
        .sf("CellV_SF", -3)
        .scaled("A", b.current_a, -1)
        .sf("A_SF", -1)
        .scaled("AChaMax", b.max_charge_a, -1)
        .scaled("ADisChaMax", b.max_discharge_a, -1)
        .sf("AMax_SF", -1)
        .scaled("W", b.power_w, w_sf)
        .sf("W_SF", w_sf);

    let mut ctl = ModelBuf::new(&DER_CTL_AC);
    ctl.int("WSetEna", u32::from(b.setpoint_enabled))
        .int("WSetMod", 1)
        .scaled("WSet", b.setpoint_w, 0)
        .sf("WSet_SF", 0)
        .int("WSetRvrtTms", b.setpoint_revert_s);

    // 803/804 come after 704 so the writable points keep static addresses; SunSpec clients
    // find models by scanning the chain.
    chain(vec![
        common("Battery PCS", serial),
        bat,
        ctl,
        lithium::render_bank(b),
        lithium::render_string(b),
    ])
}

/// Renders a model 203 meter.
pub(crate) fn render_meter(m: &MeterView, model: &str, serial: &str) -> Image {
    let mut meter = ModelBuf::new(&METER_WYE);
    let avg_v = m.voltage_v.iter().sum::<f64>() / 3.0;
    meter
        .scaled("A", m.current_a.iter().sum(), -1)
        .scaled("AphA", m.current_a[0], -1)
        .scaled("AphB", m.current_a[1], -1)
        .scaled("AphC", m.current_a[2], -1)
        .sf("A_SF", -1)
        .scaled("PhV", avg_v, -1)
        .scaled("PhVphA", m.voltage_v[0], -1)
        .scaled("PhVphB", m.voltage_v[1], -1)
        .scaled("PhVphC", m.voltage_v[2], -1)
        .sf("V_SF", -1)
        .scaled("Hz", m.frequency_hz, -2)
        .sf("Hz_SF", -2)
        .scaled("W", m.power_w, 1)
        .scaled("WphA", m.phase_w[0], 1)
        .scaled("WphB", m.phase_w[1], 1)
        .scaled("WphC", m.phase_w[2], 1)
        .sf("W_SF", 1)
        .scaled("TotWhExp", m.export_wh, 0)
        .scaled("TotWhImp", m.import_wh, 0)
        .sf("TotWh_SF", 0)
        .int("Evt", 0);
    chain(vec![common(model, serial), meter])
}

fn field(models: &[&ModelDef], id: u16, name: &str, kind: FieldKind) -> Option<Field> {
    let def = models.iter().find(|m| m.id == id)?;
    let (_, ty) = def.point(name)?;
    Some(Field {
        unit: SUNSPEC_UNIT,
        addr: point_address(models, id, name)?,
        len: ty.size(),
        kind,
    })
}

/// The writable points of the PV inverter.
pub(crate) fn pv_fields() -> Vec<Field> {
    [
        (123, "Conn", FieldKind::PvConn),
        (123, "WMaxLimPct", FieldKind::PvLimitPct),
        (123, "WMaxLimPct_RvrtTms", FieldKind::PvLimitRevertS),
        (123, "WMaxLim_Ena", FieldKind::PvLimitEnabled),
    ]
    .into_iter()
    .filter_map(|(id, name, kind)| field(PV_MODELS, id, name, kind))
    .collect()
}

/// The writable points of the battery.
pub(crate) fn battery_fields() -> Vec<Field> {
    [
        (802, "SoCRsvMin", FieldKind::BatterySocReserveMin),
        (704, "WSetEna", FieldKind::BatterySetpointEnabled),
        (704, "WSetMod", FieldKind::BatterySetpointMode),
        (704, "WSet", FieldKind::BatterySetpointW),
        (704, "WSetRvrtTms", FieldKind::BatterySetpointRevertS),
    ]
    .into_iter()
    .filter_map(|(id, name, kind)| field(BATTERY_MODELS, id, name, kind))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lengths_match_the_sunspec_definitions() {
        let lens: Vec<(u16, u16)> = [
            &COMMON,
            &INVERTER_3P,
            &NAMEPLATE,
            &CONTROLS,
            &METER_WYE,
            &BATTERY,
            &DER_CTL_AC,
        ]
        .iter()
        .map(|m| {
            let sum: u16 = m.points.iter().map(|p| p.1.size()).sum();
            assert_eq!(sum, m.len, "model {}", m.id);
            (m.id, m.len)
        })
        .collect();
        assert_eq!(
            lens,
            vec![
                (1, 66),
                (103, 50),
                (120, 26),
                (123, 24),
                (203, 105),
                (802, 62),
                (704, 65)
            ]
        );
    }

    #[test]
    fn key_point_offsets_match_the_published_maps() {
        assert_eq!(INVERTER_3P.point("W").map(|p| p.0), Some(14));
        assert_eq!(INVERTER_3P.point("WH").map(|p| p.0), Some(24));
        assert_eq!(INVERTER_3P.point("St").map(|p| p.0), Some(38));
        assert_eq!(CONTROLS.point("WMaxLimPct").map(|p| p.0), Some(5));
        assert_eq!(CONTROLS.point("WMaxLimPct_SF").map(|p| p.0), Some(23));
        assert_eq!(BATTERY.point("SoC").map(|p| p.0), Some(11));
        assert_eq!(BATTERY.point("W_SF").map(|p| p.0), Some(63));
        assert_eq!(DER_CTL_AC.point("WSet").map(|p| p.0), Some(24));
        assert_eq!(DER_CTL_AC.point("WSetRvrtTms").map(|p| p.0), Some(31));
        assert_eq!(METER_WYE.point("TotWhImp").map(|p| p.0), Some(46));
        assert_eq!(COMMON.point("DA").map(|p| p.0), Some(66));
    }

    #[test]
    fn every_writable_point_resolves_to_an_address() {
        assert_eq!(pv_fields().len(), 4);
        assert_eq!(battery_fields().len(), 5);
        // PV: common (68) then 103 (52) then 120 (28) then 123 at 40002 + 148.
        assert_eq!(point_address(PV_MODELS, 123, "WMaxLimPct"), Some(40150 + 5));
    }
}

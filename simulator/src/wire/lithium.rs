//! SunSpec lithium-ion models after the battery base model: 803 (bank, one string group) and
//! 804 (string, one module group per module), point by point as in pysunspec2's
//! `model_803.json` / `model_804.json`. Repeating groups follow the fixed block, and L counts
//! them (803: 26 + 32 x NStr, 804: 46 + 16 x NMod).
//!
//! Rendered from [`BatteryView`] alone: the pack is one string; the module holding the highest
//! cell, the lowest cell, the hottest and the coolest module come from the physics; the other
//! modules show cells within a sixth of the spread around the average and temperatures on a
//! line between the coolest (module 1) and the hottest module. Scale factors: cell voltage
//! -3 (mV), temperature -1, current -1, SoC/SoH -1, string voltage -1.

use super::models::{ModelBuf, ModelDef, PointType, P};
use crate::view::BatteryView;

/// Model 803 (lithium-ion bank), fixed block, L without the string groups = 26.
pub(crate) const LI_BANK: ModelDef = ModelDef {
    id: 803,
    len: 26,
    points: &[
        P("NStr", PointType::U16),
        P("NStrCon", PointType::U16),
        P("ModTmpMax", PointType::I16),
        P("ModTmpMaxStr", PointType::U16),
        P("ModTmpMaxMod", PointType::U16),
        P("ModTmpMin", PointType::I16),
        P("ModTmpMinStr", PointType::U16),
        P("ModTmpMinMod", PointType::U16),
        P("ModTmpAvg", PointType::I16),
        P("StrVMax", PointType::U16),
        P("StrVMaxStr", PointType::U16),
        P("StrVMin", PointType::U16),
        P("StrVMinStr", PointType::U16),
        P("StrVAvg", PointType::U16),
        P("StrAMax", PointType::I16),
        P("StrAMaxStr", PointType::U16),
        P("StrAMin", PointType::I16),
        P("StrAMinStr", PointType::U16),
        P("StrAAvg", PointType::I16),
        P("NCellBal", PointType::U16),
        P("CellV_SF", PointType::Sf),
        P("ModTmp_SF", PointType::Sf),
        P("A_SF", PointType::Sf),
        P("SoH_SF", PointType::Sf),
        P("SoC_SF", PointType::Sf),
        P("V_SF", PointType::Sf),
    ],
};

/// Model 803 repeating group `string`, 32 registers.
pub(crate) const LI_BANK_STRING: ModelDef = ModelDef {
    id: 0,
    len: 32,
    points: &[
        P("StrNMod", PointType::U16),
        P("StrSt", PointType::Bits32),
        P("StrConFail", PointType::Enum16),
        P("StrSoC", PointType::U16),
        P("StrSoH", PointType::U16),
        P("StrA", PointType::I16),
        P("StrCellVMax", PointType::U16),
        P("StrCellVMaxMod", PointType::U16),
        P("StrCellVMin", PointType::U16),
        P("StrCellVMinMod", PointType::U16),
        P("StrCellVAvg", PointType::U16),
        P("StrModTmpMax", PointType::I16),
        P("StrModTmpMaxMod", PointType::U16),
        P("StrModTmpMin", PointType::I16),
        P("StrModTmpMinMod", PointType::U16),
        P("StrModTmpAvg", PointType::I16),
        P("StrDisRsn", PointType::Enum16),
        P("StrConSt", PointType::Bits32),
        P("StrEvt1", PointType::Bits32),
        P("StrEvt2", PointType::Bits32),
        P("StrEvtVnd1", PointType::Bits32),
        P("StrEvtVnd2", PointType::Bits32),
        P("StrSetEna", PointType::Enum16),
        P("StrSetCon", PointType::Enum16),
        P("Pad1", PointType::Pad),
        P("Pad2", PointType::Pad),
    ],
};

/// Model 804 (lithium-ion string), fixed block, L without the module groups = 46.
pub(crate) const LI_STRING: ModelDef = ModelDef {
    id: 804,
    len: 46,
    points: &[
        P("Idx", PointType::U16),
        P("NMod", PointType::U16),
        P("St", PointType::Bits32),
        P("ConFail", PointType::Enum16),
        P("NCellBal", PointType::U16),
        P("SoC", PointType::U16),
        P("DoD", PointType::U16),
        P("NCyc", PointType::U32),
        P("SoH", PointType::U16),
        P("A", PointType::I16),
        P("V", PointType::U16),
        P("CellVMax", PointType::U16),
        P("CellVMaxMod", PointType::U16),
        P("CellVMin", PointType::U16),
        P("CellVMinMod", PointType::U16),
        P("CellVAvg", PointType::U16),
        P("ModTmpMax", PointType::I16),
        P("ModTmpMaxMod", PointType::U16),
        P("ModTmpMin", PointType::I16),
        P("ModTmpMinMod", PointType::U16),
        P("ModTmpAvg", PointType::I16),
        P("Pad1", PointType::Pad),
        P("ConSt", PointType::Bits32),
        P("Evt1", PointType::Bits32),
        P("Evt2", PointType::Bits32),
        P("EvtVnd1", PointType::Bits32),
        P("EvtVnd2", PointType::Bits32),
        P("SetEna", PointType::Enum16),
        P("SetCon", PointType::Enum16),
        P("SoC_SF", PointType::Sf),
        P("SoH_SF", PointType::Sf),
        P("DoD_SF", PointType::Sf),
        P("A_SF", PointType::Sf),
        P("V_SF", PointType::Sf),
        P("CellV_SF", PointType::Sf),
        P("ModTmp_SF", PointType::Sf),
        P("Pad2", PointType::Pad),
        P("Pad3", PointType::Pad),
        P("Pad4", PointType::Pad),
    ],
};

/// Model 804 repeating group `lithium_ion_string_module`, 16 registers.
pub(crate) const LI_STRING_MODULE: ModelDef = ModelDef {
    id: 0,
    len: 16,
    points: &[
        P("ModNCell", PointType::U16),
        P("ModSoC", PointType::U16),
        P("ModSoH", PointType::U16),
        P("ModCellVMax", PointType::U16),
        P("ModCellVMaxCell", PointType::U16),
        P("ModCellVMin", PointType::U16),
        P("ModCellVMinCell", PointType::U16),
        P("ModCellVAvg", PointType::U16),
        P("ModCellTmpMax", PointType::I16),
        P("ModCellTmpMaxCell", PointType::U16),
        P("ModCellTmpMin", PointType::I16),
        P("ModCellTmpMinCell", PointType::U16),
        P("ModCellTmpAvg", PointType::I16),
        P("Pad5", PointType::Pad),
        P("Pad6", PointType::Pad),
        P("Pad7", PointType::Pad),
    ],
};

/// String status bit 0 (`CONNECTED`) in 803 `StrSt` / 804 `St`.
const STRING_CONNECTED: u32 = 1;
/// Average cell and module temperature of the pack now.
fn averages(b: &BatteryView) -> (f64, f64) {
    (
        (b.cell_v_max + b.cell_v_min) / 2.0,
        (b.module_temp_max_c + b.module_temp_min_c) / 2.0,
    )
}

/// Renders model 803 with the pack's one string.
pub(crate) fn render_bank(b: &BatteryView) -> ModelBuf {
    let (v_avg, t_avg) = averages(b);
    let mut bank = ModelBuf::new(&LI_BANK);
    bank.int("NStr", 1)
        .int("NStrCon", 1)
        .scaled("ModTmpMax", b.module_temp_max_c, -1)
        .int("ModTmpMaxStr", 1)
        .int("ModTmpMaxMod", u32::from(b.module_temp_max_module))
        .scaled("ModTmpMin", b.module_temp_min_c, -1)
        .int("ModTmpMinStr", 1)
        .int("ModTmpMinMod", u32::from(b.module_temp_min_module))
        .scaled("ModTmpAvg", t_avg, -1)
        .scaled("StrVMax", b.voltage_v, -1)
        .int("StrVMaxStr", 1)
        .scaled("StrVMin", b.voltage_v, -1)
        .int("StrVMinStr", 1)
        .scaled("StrVAvg", b.voltage_v, -1)
        .scaled("StrAMax", b.current_a, -1)
        .int("StrAMaxStr", 1)
        .scaled("StrAMin", b.current_a, -1)
        .int("StrAMinStr", 1)
        .scaled("StrAAvg", b.current_a, -1)
        .sf("CellV_SF", -3)
        .sf("ModTmp_SF", -1)
        .sf("A_SF", -1)
        .sf("SoH_SF", -1)
        .sf("SoC_SF", -1)
        .sf("V_SF", -1);
    let mut s = ModelBuf::new(&LI_BANK_STRING);
    s.int("StrNMod", u32::from(b.modules))
        .int("StrSt", STRING_CONNECTED)
        .scaled("StrSoC", b.soc_pct, -1)
        .scaled("StrSoH", b.soh_pct, -1)
        .scaled("StrA", b.current_a, -1)
        .scaled("StrCellVMax", b.cell_v_max, -3)
        .int("StrCellVMaxMod", u32::from(b.cell_v_max_module))
        .scaled("StrCellVMin", b.cell_v_min, -3)
        .int("StrCellVMinMod", u32::from(b.cell_v_min_module))
        .scaled("StrCellVAvg", v_avg, -3)
        .scaled("StrModTmpMax", b.module_temp_max_c, -1)
        .int("StrModTmpMaxMod", u32::from(b.module_temp_max_module))
        .scaled("StrModTmpMin", b.module_temp_min_c, -1)
        .int("StrModTmpMinMod", u32::from(b.module_temp_min_module))
        .scaled("StrModTmpAvg", t_avg, -1)
        .int("StrEvt1", 0);
    bank.append_group(s);
    bank
}

/// Renders model 804 for the pack's one string with a group per module.
pub(crate) fn render_string(b: &BatteryView) -> ModelBuf {
    let (v_avg, t_avg) = averages(b);
    let mut st = ModelBuf::new(&LI_STRING);
    st.int("Idx", 1)
        .int("NMod", u32::from(b.modules))
        .int("St", STRING_CONNECTED)
        .scaled("SoC", b.soc_pct, -1)
        .int("NCyc", b.cycles)
        .scaled("SoH", b.soh_pct, -1)
        .scaled("A", b.current_a, -1)
        .scaled("V", b.voltage_v, -1)
        .scaled("CellVMax", b.cell_v_max, -3)
        .int("CellVMaxMod", u32::from(b.cell_v_max_module))
        .scaled("CellVMin", b.cell_v_min, -3)
        .int("CellVMinMod", u32::from(b.cell_v_min_module))
        .scaled("CellVAvg", v_avg, -3)
        .scaled("ModTmpMax", b.module_temp_max_c, -1)
        .int("ModTmpMaxMod", u32::from(b.module_temp_max_module))
        .scaled("ModTmpMin", b.module_temp_min_c, -1)
        .int("ModTmpMinMod", u32::from(b.module_temp_min_module))
        .scaled("ModTmpAvg", t_avg, -1)
        .int("Evt1", 0)
        .sf("SoC_SF", -1)
        .sf("SoH_SF", -1)
        .sf("A_SF", -1)
        .sf("V_SF", -1)
        .sf("CellV_SF", -3)
        .sf("ModTmp_SF", -1);
    for m in 1..=b.modules {
        st.append_group(render_module(b, m, v_avg));
    }
    st
}

/// One module group of model 804.
fn render_module(b: &BatteryView, m: u16, v_avg: f64) -> ModelBuf {
    let inner = (b.cell_v_max - b.cell_v_min) / 6.0;
    let v_max = if m == b.cell_v_max_module {
        b.cell_v_max
    } else {
        v_avg + inner
    };
    let v_min = if m == b.cell_v_min_module {
        b.cell_v_min
    } else {
        v_avg - inner
    };
    let hot = b.module_temp_max_module;
    let reach = f64::from(hot.max(2) - 1);
    let closeness = 1.0 - (f64::from(m.abs_diff(hot)) / reach).min(1.0);
    let t = b.module_temp_min_c + closeness * (b.module_temp_max_c - b.module_temp_min_c);
    let mut g = ModelBuf::new(&LI_STRING_MODULE);
    g.int("ModNCell", u32::from(b.cells_per_module))
        .scaled("ModSoC", b.soc_pct, -1)
        .scaled("ModCellVMax", v_max, -3)
        .scaled("ModCellVMin", v_min, -3)
        .scaled("ModCellVAvg", (v_max + v_min) / 2.0, -3)
        .scaled("ModCellTmpMax", t, -1)
        .scaled("ModCellTmpMin", t, -1)
        .scaled("ModCellTmpAvg", t, -1);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_blocks_and_groups_have_the_published_lengths() {
        for (def, len) in [
            (&LI_BANK, 26),
            (&LI_BANK_STRING, 32),
            (&LI_STRING, 46),
            (&LI_STRING_MODULE, 16),
        ] {
            let sum: u16 = def.points.iter().map(|p| p.1.size()).sum();
            assert_eq!((sum, def.len), (len, len), "model {}", def.id);
        }
        assert_eq!(LI_STRING.point("CellVMin").map(|p| p.0), Some(2 + 15));
        assert_eq!(LI_BANK.point("ModTmpMaxMod").map(|p| p.0), Some(2 + 4));
    }
}

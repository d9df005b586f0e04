//! SunSpec model definitions used by the simulator, point by point.
//!
//! The point lists (names, types, sizes, order) follow the SunSpec model JSON files shipped in
//! the `pysunspec2` package (`sunspec2/models/json/model_<id>.json`); offsets are derived from
//! the order, so a point's offset from the model's ID register is `2 + sum(sizes before it)`.
//! Repeating groups of model 704 appear once each, with the group name as a prefix.

use super::encode;

/// SunSpec point types the simulator renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointType {
    U16,
    I16,
    Enum16,
    Sf,
    Acc32,
    U32,
    I32,
    Bits32,
    Pad,
    /// String of this many registers.
    Str(u16),
}

impl PointType {
    /// Size of the point in registers.
    pub(crate) const fn size(self) -> u16 {
        match self {
            PointType::U16
            | PointType::I16
            | PointType::Enum16
            | PointType::Sf
            | PointType::Pad => 1,
            PointType::Acc32 | PointType::U32 | PointType::I32 | PointType::Bits32 => 2,
            PointType::Str(n) => n,
        }
    }

    /// Writes the SunSpec "not implemented" marker of this type into `words`.
    pub(crate) fn write_marker(self, words: &mut [u16]) {
        match self {
            PointType::I16 | PointType::Sf | PointType::Pad => words[0] = 0x8000,
            PointType::U16 | PointType::Enum16 => words[0] = 0xFFFF,
            PointType::Acc32 => words[..2].copy_from_slice(&[0, 0]),
            PointType::U32 | PointType::Bits32 => words[..2].copy_from_slice(&[0xFFFF, 0xFFFF]),
            PointType::I32 => words[..2].copy_from_slice(&[0x8000, 0]),
            PointType::Str(_) => words.iter_mut().for_each(|w| *w = 0),
        }
    }
}

/// One point of a model definition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct P(pub(crate) &'static str, pub(crate) PointType);

/// A SunSpec model: its id, its length L (registers after the ID and L registers) and points.
#[derive(Debug)]
pub(crate) struct ModelDef {
    pub(crate) id: u16,
    pub(crate) len: u16,
    pub(crate) points: &'static [P],
}

impl ModelDef {
    /// Offset of `name` from the model's ID register, with its type.
    pub(crate) fn point(&self, name: &str) -> Option<(u16, PointType)> {
        let mut offset = 2;
        for p in self.points {
            if p.0 == name {
                return Some((offset, p.1));
            }
            offset += p.1.size();
        }
        None
    }
}

/// The registers of one model instance being rendered: starts with every point "not
/// implemented", then the renderer sets the points it has values for.
pub(crate) struct ModelBuf {
    def: &'static ModelDef,
    words: Vec<u16>,
}

impl ModelBuf {
    pub(crate) fn new(def: &'static ModelDef) -> Self {
        let mut words = vec![0u16; usize::from(def.len) + 2];
        words[0] = def.id;
        words[1] = def.len;
        let mut offset = 2usize;
        for p in def.points {
            let size = usize::from(p.1.size());
            p.1.write_marker(&mut words[offset..offset + size]);
            offset += size;
        }
        ModelBuf { def, words }
    }

    fn slot(&mut self, name: &str) -> (&mut [u16], PointType) {
        match self.def.point(name) {
            Some((offset, ty)) => {
                let start = usize::from(offset);
                let end = start + usize::from(ty.size());
                (&mut self.words[start..end], ty)
            }
            // The renderers only name points of their own model; a typo is a programming
            // error caught by the unit tests, which check every renderer against its model.
            None => (&mut [], PointType::Pad),
        }
    }

    /// Sets an integer point from an engineering value and a scale factor
    /// (raw = value / 10^sf, rounded, clamped; NaN renders the "not implemented" marker).
    pub(crate) fn scaled(&mut self, name: &str, value: f64, sf: i16) -> &mut Self {
        let (slot, ty) = self.slot(name);
        match ty {
            PointType::U16 | PointType::Enum16 => slot[0] = encode::u16_scaled(value, sf),
            PointType::I16 => slot[0] = encode::i16_scaled(value, sf),
            PointType::Acc32 => slot.copy_from_slice(&encode::acc32_scaled(value, sf)),
            PointType::U32 | PointType::Bits32 => {
                slot.copy_from_slice(&encode::u32_scaled(value, sf))
            }
            PointType::I32 => slot.copy_from_slice(&encode::i32_scaled(value, sf)),
            PointType::Sf | PointType::Pad | PointType::Str(_) => {}
        }
        self
    }

    /// Sets an unscaled integer point (enums, counters, times).
    pub(crate) fn int(&mut self, name: &str, value: u32) -> &mut Self {
        let (slot, ty) = self.slot(name);
        match ty {
            PointType::U16 | PointType::Enum16 | PointType::I16 => {
                slot[0] = u16::try_from(value).unwrap_or(0xFFFE)
            }
            PointType::Acc32 | PointType::U32 | PointType::Bits32 | PointType::I32 => {
                slot.copy_from_slice(&[(value >> 16) as u16, (value & 0xFFFF) as u16])
            }
            PointType::Sf | PointType::Pad | PointType::Str(_) => {}
        }
        self
    }

    /// Sets a scale-factor point.
    pub(crate) fn sf(&mut self, name: &str, sf: i16) -> &mut Self {
        let (slot, ty) = self.slot(name);
        if ty == PointType::Sf {
            slot[0] = sf as u16;
        }
        self
    }

    /// Sets a string point (ASCII, NUL padded, truncated to the point size).
    pub(crate) fn string(&mut self, name: &str, text: &str) -> &mut Self {
        let (slot, ty) = self.slot(name);
        if let PointType::Str(_) = ty {
            encode::string_into(text, slot);
        }
        self
    }

    /// Appends one instance of a repeating group (rendered with its own group definition)
    /// after this model's registers; L grows by the group's length.
    pub(crate) fn append_group(&mut self, group: ModelBuf) {
        self.words[1] = self.words[1].saturating_add(group.def.len);
        self.words.extend_from_slice(&group.words[2..]);
    }

    pub(crate) fn into_words(self) -> Vec<u16> {
        self.words
    }
}

/// Model 1 (common), L = 66.
pub(crate) const COMMON: ModelDef = ModelDef {
    id: 1,
    len: 66,
    points: &[
        P("Mn", PointType::Str(16)),
        P("Md", PointType::Str(16)),
        P("Opt", PointType::Str(8)),
        P("Vr", PointType::Str(8)),
        P("SN", PointType::Str(16)),
        P("DA", PointType::U16),
        P("Pad", PointType::Pad),
    ],
};

/// Model 103 (inverter_three_phase), L = 50.
pub(crate) const INVERTER_3P: ModelDef = ModelDef {
    id: 103,
    len: 50,
    points: &[
        P("A", PointType::U16),
        P("AphA", PointType::U16),
        P("AphB", PointType::U16),
        P("AphC", PointType::U16),
        P("A_SF", PointType::Sf),
        P("PPVphAB", PointType::U16),
        P("PPVphBC", PointType::U16),
        P("PPVphCA", PointType::U16),
        P("PhVphA", PointType::U16),
        P("PhVphB", PointType::U16),
        P("PhVphC", PointType::U16),
        P("V_SF", PointType::Sf),
        P("W", PointType::I16),
        P("W_SF", PointType::Sf),
        P("Hz", PointType::U16),
        P("Hz_SF", PointType::Sf),
        P("VA", PointType::I16),
        P("VA_SF", PointType::Sf),
        P("VAr", PointType::I16),
        P("VAr_SF", PointType::Sf),
        P("PF", PointType::I16),
        P("PF_SF", PointType::Sf),
        P("WH", PointType::Acc32),
        P("WH_SF", PointType::Sf),
        P("DCA", PointType::U16),
        P("DCA_SF", PointType::Sf),
        P("DCV", PointType::U16),
        P("DCV_SF", PointType::Sf),
        P("DCW", PointType::I16),
        P("DCW_SF", PointType::Sf),
        P("TmpCab", PointType::I16),
        P("TmpSnk", PointType::I16),
        P("TmpTrns", PointType::I16),
        P("TmpOt", PointType::I16),
        P("Tmp_SF", PointType::Sf),
        P("St", PointType::Enum16),
        P("StVnd", PointType::Enum16),
        P("Evt1", PointType::Bits32),
        P("Evt2", PointType::Bits32),
        P("EvtVnd1", PointType::Bits32),
        P("EvtVnd2", PointType::Bits32),
        P("EvtVnd3", PointType::Bits32),
        P("EvtVnd4", PointType::Bits32),
    ],
};

/// Model 120 (nameplate), L = 26.
pub(crate) const NAMEPLATE: ModelDef = ModelDef {
    id: 120,
    len: 26,
    points: &[
        P("DERTyp", PointType::Enum16),
        P("WRtg", PointType::U16),
        P("WRtg_SF", PointType::Sf),
        P("VARtg", PointType::U16),
        P("VARtg_SF", PointType::Sf),
        P("VArRtgQ1", PointType::I16),
        P("VArRtgQ2", PointType::I16),
        P("VArRtgQ3", PointType::I16),
        P("VArRtgQ4", PointType::I16),
        P("VArRtg_SF", PointType::Sf),
        P("ARtg", PointType::U16),
        P("ARtg_SF", PointType::Sf),
        P("PFRtgQ1", PointType::I16),
        P("PFRtgQ2", PointType::I16),
        P("PFRtgQ3", PointType::I16),
        P("PFRtgQ4", PointType::I16),
        P("PFRtg_SF", PointType::Sf),
        P("WHRtg", PointType::U16),
        P("WHRtg_SF", PointType::Sf),
        P("AhrRtg", PointType::U16),
        P("AhrRtg_SF", PointType::Sf),
        P("MaxChaRte", PointType::U16),
        P("MaxChaRte_SF", PointType::Sf),
        P("MaxDisChaRte", PointType::U16),
        P("MaxDisChaRte_SF", PointType::Sf),
        P("Pad", PointType::Pad),
    ],
};

/// Model 123 (controls), L = 24.
pub(crate) const CONTROLS: ModelDef = ModelDef {
    id: 123,
    len: 24,
    points: &[
        P("Conn_WinTms", PointType::U16),
        P("Conn_RvrtTms", PointType::U16),
        P("Conn", PointType::Enum16),
        P("WMaxLimPct", PointType::U16),
        P("WMaxLimPct_WinTms", PointType::U16),
        P("WMaxLimPct_RvrtTms", PointType::U16),
        P("WMaxLimPct_RmpTms", PointType::U16),
        P("WMaxLim_Ena", PointType::Enum16),
        P("OutPFSet", PointType::I16),
        P("OutPFSet_WinTms", PointType::U16),
        P("OutPFSet_RvrtTms", PointType::U16),
        P("OutPFSet_RmpTms", PointType::U16),
        P("OutPFSet_Ena", PointType::Enum16),
        P("VArWMaxPct", PointType::I16),
        P("VArMaxPct", PointType::I16),
        P("VArAvalPct", PointType::I16),
        P("VArPct_WinTms", PointType::U16),
        P("VArPct_RvrtTms", PointType::U16),
        P("VArPct_RmpTms", PointType::U16),
        P("VArPct_Mod", PointType::Enum16),
        P("VArPct_Ena", PointType::Enum16),
        P("WMaxLimPct_SF", PointType::Sf),
        P("OutPFSet_SF", PointType::Sf),
        P("VArPct_SF", PointType::Sf),
    ],
};

/// Model 203 (ac_meter_abcn), L = 105.
pub(crate) const METER_WYE: ModelDef = ModelDef {
    id: 203,
    len: 105,
    points: &[
        P("A", PointType::I16),
        P("AphA", PointType::I16),
        P("AphB", PointType::I16),
        P("AphC", PointType::I16),
        P("A_SF", PointType::Sf),
        P("PhV", PointType::I16),
        P("PhVphA", PointType::I16),
        P("PhVphB", PointType::I16),
        P("PhVphC", PointType::I16),
        P("PPV", PointType::I16),
        P("PhVphAB", PointType::I16),
        P("PhVphBC", PointType::I16),
        P("PhVphCA", PointType::I16),
        P("V_SF", PointType::Sf),
        P("Hz", PointType::I16),
        P("Hz_SF", PointType::Sf),
        P("W", PointType::I16),
        P("WphA", PointType::I16),
        P("WphB", PointType::I16),
        P("WphC", PointType::I16),
        P("W_SF", PointType::Sf),
        P("VA", PointType::I16),
        P("VAphA", PointType::I16),
        P("VAphB", PointType::I16),
        P("VAphC", PointType::I16),
        P("VA_SF", PointType::Sf),
        P("VAR", PointType::I16),
        P("VARphA", PointType::I16),
        P("VARphB", PointType::I16),
        P("VARphC", PointType::I16),
        P("VAR_SF", PointType::Sf),
        P("PF", PointType::I16),
        P("PFphA", PointType::I16),
        P("PFphB", PointType::I16),
        P("PFphC", PointType::I16),
        P("PF_SF", PointType::Sf),
        P("TotWhExp", PointType::Acc32),
        P("TotWhExpPhA", PointType::Acc32),
        P("TotWhExpPhB", PointType::Acc32),
        P("TotWhExpPhC", PointType::Acc32),
        P("TotWhImp", PointType::Acc32),
        P("TotWhImpPhA", PointType::Acc32),
        P("TotWhImpPhB", PointType::Acc32),
        P("TotWhImpPhC", PointType::Acc32),
        P("TotWh_SF", PointType::Sf),
        P("TotVAhExp", PointType::Acc32),
        P("TotVAhExpPhA", PointType::Acc32),
        P("TotVAhExpPhB", PointType::Acc32),
        P("TotVAhExpPhC", PointType::Acc32),
        P("TotVAhImp", PointType::Acc32),
        P("TotVAhImpPhA", PointType::Acc32),
        P("TotVAhImpPhB", PointType::Acc32),
        P("TotVAhImpPhC", PointType::Acc32),
        P("TotVAh_SF", PointType::Sf),
        P("TotVArhImpQ1", PointType::Acc32),
        P("TotVArhImpQ1PhA", PointType::Acc32),
        P("TotVArhImpQ1PhB", PointType::Acc32),
        P("TotVArhImpQ1PhC", PointType::Acc32),
        P("TotVArhImpQ2", PointType::Acc32),
        P("TotVArhImpQ2PhA", PointType::Acc32),
        P("TotVArhImpQ2PhB", PointType::Acc32),
        P("TotVArhImpQ2PhC", PointType::Acc32),
        P("TotVArhExpQ3", PointType::Acc32),
        P("TotVArhExpQ3PhA", PointType::Acc32),
        P("TotVArhExpQ3PhB", PointType::Acc32),
        P("TotVArhExpQ3PhC", PointType::Acc32),
        P("TotVArhExpQ4", PointType::Acc32),
        P("TotVArhExpQ4PhA", PointType::Acc32),
        P("TotVArhExpQ4PhB", PointType::Acc32),
        P("TotVArhExpQ4PhC", PointType::Acc32),
        P("TotVArh_SF", PointType::Sf),
        P("Evt", PointType::Bits32),
    ],
};

/// Model 802 (battery), L = 62.
pub(crate) const BATTERY: ModelDef = ModelDef {
    id: 802,
    len: 62,
    points: &[
        P("AHRtg", PointType::U16),
        P("WHRtg", PointType::U16),
        P("WChaRteMax", PointType::U16),
        P("WDisChaRteMax", PointType::U16),
        P("DisChaRte", PointType::U16),
        P("SoCMax", PointType::U16),
        P("SoCMin", PointType::U16),
        P("SocRsvMax", PointType::U16),
        P("SoCRsvMin", PointType::U16),
        P("SoC", PointType::U16),
        P("DoD", PointType::U16),
        P("SoH", PointType::U16),
        P("NCyc", PointType::U32),
        P("ChaSt", PointType::Enum16),
        P("LocRemCtl", PointType::Enum16),
        P("Hb", PointType::U16),
        P("CtrlHb", PointType::U16),
        P("AlmRst", PointType::U16),
        P("Typ", PointType::Enum16),
        P("State", PointType::Enum16),
        P("StateVnd", PointType::Enum16),
        P("WarrDt", PointType::U32),
        P("Evt1", PointType::Bits32),
        P("Evt2", PointType::Bits32),
        P("EvtVnd1", PointType::Bits32),
        P("EvtVnd2", PointType::Bits32),
        P("V", PointType::U16),
        P("VMax", PointType::U16),
        P("VMin", PointType::U16),
        P("CellVMax", PointType::U16),
        P("CellVMaxStr", PointType::U16),
        P("CellVMaxMod", PointType::U16),
        P("CellVMin", PointType::U16),
        P("CellVMinStr", PointType::U16),
        P("CellVMinMod", PointType::U16),
        P("CellVAvg", PointType::U16),
        P("A", PointType::I16),
        P("AChaMax", PointType::U16),
        P("ADisChaMax", PointType::U16),
        P("W", PointType::I16),
        P("ReqInvState", PointType::Enum16),
        P("ReqW", PointType::I16),
        P("SetOp", PointType::Enum16),
        P("SetInvState", PointType::Enum16),
        P("AHRtg_SF", PointType::Sf),
        P("WHRtg_SF", PointType::Sf),
        P("WChaDisChaMax_SF", PointType::Sf),
        P("DisChaRte_SF", PointType::Sf),
        P("SoC_SF", PointType::Sf),
        P("DoD_SF", PointType::Sf),
        P("SoH_SF", PointType::Sf),
        P("V_SF", PointType::Sf),
        P("CellV_SF", PointType::Sf),
        P("A_SF", PointType::Sf),
        P("AMax_SF", PointType::Sf),
        P("W_SF", PointType::Sf),
    ],
};

/// Model 704 (DERCtlAC), L = 65.
pub(crate) const DER_CTL_AC: ModelDef = ModelDef {
    id: 704,
    len: 65,
    points: &[
        P("PFWInjEna", PointType::Enum16),
        P("PFWInjEnaRvrt", PointType::Enum16),
        P("PFWInjRvrtTms", PointType::U32),
        P("PFWInjRvrtRem", PointType::U32),
        P("PFWAbsEna", PointType::Enum16),
        P("PFWAbsEnaRvrt", PointType::Enum16),
        P("PFWAbsRvrtTms", PointType::U32),
        P("PFWAbsRvrtRem", PointType::U32),
        P("WMaxLimPctEna", PointType::Enum16),
        P("WMaxLimPct", PointType::U16),
        P("WMaxLimPctRvrt", PointType::U16),
        P("WMaxLimPctEnaRvrt", PointType::Enum16),
        P("WMaxLimPctRvrtTms", PointType::U32),
        P("WMaxLimPctRvrtRem", PointType::U32),
        P("WSetEna", PointType::Enum16),
        P("WSetMod", PointType::Enum16),
        P("WSet", PointType::I32),
        P("WSetRvrt", PointType::I32),
        P("WSetPct", PointType::I16),
        P("WSetPctRvrt", PointType::I16),
        P("WSetEnaRvrt", PointType::Enum16),
        P("WSetRvrtTms", PointType::U32),
        P("WSetRvrtRem", PointType::U32),
        P("VarSetEna", PointType::Enum16),
        P("VarSetMod", PointType::Enum16),
        P("VarSetPri", PointType::Enum16),
        P("VarSet", PointType::I32),
        P("VarSetRvrt", PointType::I32),
        P("VarSetPct", PointType::I16),
        P("VarSetPctRvrt", PointType::I16),
        P("VarSetEnaRvrt", PointType::Enum16),
        P("VarSetRvrtTms", PointType::U32),
        P("VarSetRvrtRem", PointType::U32),
        P("WRmp", PointType::U16),
        P("WRmpRef", PointType::Enum16),
        P("VarRmp", PointType::U16),
        P("AntiIslEna", PointType::Enum16),
        P("PF_SF", PointType::Sf),
        P("WMaxLimPct_SF", PointType::Sf),
        P("WSet_SF", PointType::Sf),
        P("WSetPct_SF", PointType::Sf),
        P("VarSet_SF", PointType::Sf),
        P("VarSetPct_SF", PointType::Sf),
        P("PFWInj.PF", PointType::U16),
        P("PFWInj.Ext", PointType::Enum16),
        P("PFWInjRvrt.PF", PointType::U16),
        P("PFWInjRvrt.Ext", PointType::Enum16),
        P("PFWAbs.PF", PointType::U16),
        P("PFWAbs.Ext", PointType::Enum16),
        P("PFWAbsRvrt.PF", PointType::U16),
        P("PFWAbsRvrt.Ext", PointType::Enum16),
    ],
};

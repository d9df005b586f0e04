//! The checked profile: every point typed, every address and scale known, validated against
//! the kind's required points. Problems are collected all at once, each named by file and key.

use super::decode::{ValueType, WordOrder};
use super::schema::{RawPoint, RawProbe, RawProfile, RawSetpoint};
use crate::config::Issues;
use crate::devices::charger::Mode3;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the profiled device is; decides which reading it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Meter,
    Pv,
    Battery,
    Charger,
}

impl ProfileKind {
    /// The config spelling (`meter`, `pv`, `battery`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meter => "meter",
            Self::Pv => "pv",
            Self::Battery => "battery",
            Self::Charger => "charger",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "meter" => Some(Self::Meter),
            "pv" => Some(Self::Pv),
            "battery" | "pcs" => Some(Self::Battery),
            "charger" => Some(Self::Charger),
            _ => None,
        }
    }

    /// The points the driver maps into the kind's reading: (name, unit, required).
    pub fn known_points(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Self::Meter => &[
                ("power_w", "W", true),
                ("power_l1_w", "W", false),
                ("power_l2_w", "W", false),
                ("power_l3_w", "W", false),
                ("frequency_hz", "Hz", false),
                ("import_wh", "Wh", false),
                ("export_wh", "Wh", false),
            ],
            Self::Pv => &[
                ("power_w", "W", true),
                ("energy_wh", "Wh", false),
                ("rating_w", "W", false),
                ("dc_power_w", "W", false),
                ("frequency_hz", "Hz", false),
                ("status", "", false),
            ],
            Self::Battery => &[
                ("power_w", "W", true),
                ("soc_pct", "%", true),
                ("soh_pct", "%", false),
                ("capacity_wh", "Wh", false),
                ("max_charge_w", "W", false),
                ("max_discharge_w", "W", false),
                ("voltage_v", "V", false),
                ("current_a", "A", false),
                ("state", "", false),
            ],
            Self::Charger => &[
                ("state", "", true),
                ("current_l1_a", "A", true),
                ("current_l2_a", "A", false),
                ("current_l3_a", "A", false),
                ("power_w", "W", true),
                ("energy_wh", "Wh", false),
                ("applied_max_a", "A", false),
            ],
        }
    }

    /// The setpoints the driver writes: (name, unit, required).
    pub fn known_setpoints(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Self::Meter => &[],
            Self::Pv => &[("limit_pct", "%", false)],
            Self::Battery => &[("power_w", "W", true)],
            Self::Charger => &[("current_a", "A", true), ("fallback_current_a", "A", false)],
        }
    }
}

/// How a raw number becomes an engineering value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// value = raw x factor.
    Constant(f64),
    /// value = raw x 10^sf, sf an i16 at this address (same function code).
    Register(u16),
}

/// Poll class of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Every read.
    Fast,
    /// Every `slow_every` reads (energy counters, ratings).
    Slow,
}

/// Device-independent operating states a state map translates into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateName {
    Operating,
    Standby,
    Fault,
    Off,
    Starting,
    Throttled,
}

impl StateName {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "operating" => Self::Operating,
            "standby" => Self::Standby,
            "fault" => Self::Fault,
            "off" => Self::Off,
            "starting" => Self::Starting,
            "throttled" => Self::Throttled,
            _ => return None,
        })
    }

    /// The profile spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operating => "operating",
            Self::Standby => "standby",
            Self::Fault => "fault",
            Self::Off => "off",
            Self::Starting => "starting",
            Self::Throttled => "throttled",
        }
    }
}

/// What a state map entry means: an operating state (PV, battery) or an IEC 61851 state
/// (chargers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateValue {
    Operating(StateName),
    Iec61851(Mode3),
}

impl StateValue {
    fn parse(kind: Option<ProfileKind>, s: &str) -> Result<Self, String> {
        if kind == Some(ProfileKind::Charger) {
            Mode3::parse(s).map(Self::Iec61851).ok_or_else(|| {
                format!("expected an IEC 61851 state A, B1, B2, C1, C2, D1, D2, E or F (got {s:?})")
            })
        } else {
            StateName::parse(s).map(Self::Operating).ok_or_else(|| {
                format!(
                    "expected operating, standby, fault, off, starting or throttled (got {s:?})"
                )
            })
        }
    }

    /// The profile spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operating(s) => s.as_str(),
            Self::Iec61851(m) => m.as_str(),
        }
    }
}

/// One readable point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    /// 3 (holding) or 4 (input).
    pub function: u8,
    pub address: u16,
    pub ty: ValueType,
    pub order: WordOrder,
    pub scale: Scale,
    pub unit: String,
    /// +1 or -1.
    pub sign: f64,
    /// Plausible engineering values; outside is bad data (the device shows degraded).
    pub range: Option<(f64, f64)>,
    pub poll: Poll,
    /// Raw value (a decimal code, or the text of a string point) to state.
    pub states: BTreeMap<String, StateValue>,
    /// Bit field of an unsigned point: `(raw >> shift) & mask`.
    pub bits: Option<(u8, u64)>,
    /// Negate the value while `(other point & mask) != 0`.
    pub negative_when: Option<(String, u64)>,
}

impl Point {
    /// Registers `[address, address + n)` this point occupies.
    pub fn span(&self) -> (u32, u32) {
        let a = u32::from(self.address);
        (a, a + u32::from(self.ty.registers()))
    }
}

/// One writable setpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Setpoint {
    pub name: String,
    /// 6 (single register) or 16 (multiple registers).
    pub function: u8,
    pub address: u16,
    pub ty: ValueType,
    pub order: WordOrder,
    /// Engineering value = raw x scale.
    pub scale: f64,
    pub unit: String,
    pub sign: f64,
    pub min: f64,
    pub max: f64,
    pub refresh: Option<Duration>,
    pub safe: f64,
    /// Magnitude plus direction command: (command register, code > 0, code < 0, code 0).
    pub direction: Option<Direction>,
    /// (register, value) written before the first write of each connection.
    pub prepare: Vec<(u16, u16)>,
    /// The point that reads the setpoint back (write-only set registers).
    pub readback: Option<String>,
}

/// The command register of a direction-encoded setpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    pub address: u16,
    pub positive: u16,
    pub negative: u16,
    pub zero: u16,
    /// The magnitude register of negative setpoints, when it is not the setpoint's own.
    pub negative_register: Option<u16>,
}

impl Direction {
    /// The register a magnitude for value `v` goes to (`own` is the setpoint's address).
    pub fn register_for(self, own: u16, v: f64) -> u16 {
        match self.negative_register {
            Some(r) if v < 0.0 => r,
            _ => own,
        }
    }

    /// The command code for a setpoint value.
    pub fn code(self, v: f64) -> u16 {
        if v > 0.0 {
            self.positive
        } else if v < 0.0 {
            self.negative
        } else {
            self.zero
        }
    }
}

/// One identification check.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeCheck {
    Range(f64, f64),
    Equals(String),
    StartsWith(String),
}

/// A point and what its value must satisfy before the profile is trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub point: String,
    pub check: ProbeCheck,
}

/// A checked device profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The name a device refers to (`chint-dtsu666`).
    pub name: String,
    /// The file it was loaded from.
    pub file: String,
    pub kind: ProfileKind,
    pub vendor: String,
    pub model: String,
    pub source: String,
    pub slow_every: u32,
    pub probe: Vec<Probe>,
    pub points: Vec<Point>,
    pub setpoints: Vec<Setpoint>,
}

impl Profile {
    /// The point of this name.
    pub fn point(&self, name: &str) -> Option<&Point> {
        self.points.iter().find(|p| p.name == name)
    }

    /// The setpoint of this name.
    pub fn setpoint(&self, name: &str) -> Option<&Setpoint> {
        self.setpoints.iter().find(|p| p.name == name)
    }
}

fn parse_order(raw: Option<&str>, key: &str, issues: &mut Issues) -> WordOrder {
    match raw {
        None => WordOrder::HighFirst,
        Some(s) => WordOrder::parse(s).unwrap_or_else(|| {
            issues.push(key, format!("expected high_first or low_first (got {s:?})"));
            WordOrder::HighFirst
        }),
    }
}

fn parse_sign(raw: Option<i8>, key: &str, issues: &mut Issues) -> f64 {
    match raw.unwrap_or(1) {
        1 => 1.0,
        -1 => -1.0,
        other => {
            issues.push(key, format!("must be 1 or -1 (got {other})"));
            1.0
        }
    }
}

fn parse_range(raw: [f64; 2], key: &str, issues: &mut Issues) -> (f64, f64) {
    let [lo, hi] = raw;
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        issues.push(
            key,
            format!("must be [low, high] with low <= high (got [{lo}, {hi}])"),
        );
    }
    (lo, hi)
}

fn check_type(ty: &str, registers: Option<u16>, key: &str, issues: &mut Issues) -> ValueType {
    if ty == "string" && !registers.is_some_and(|n| (1..=125).contains(&n)) {
        issues.push(key, "a string point needs `registers` within [1, 125]");
        return ValueType::String { registers: 1 };
    }
    ValueType::parse(ty, registers).unwrap_or_else(|| {
        issues.push(
            key,
            format!("expected u16, i16, u32, i32, u64, i64, f32, f64 or string (got {ty:?})"),
        );
        ValueType::U16
    })
}

fn check_point(
    kind: Option<ProfileKind>,
    name: &str,
    raw: &RawPoint,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Point {
    if raw.function != 3 && raw.function != 4 {
        issues.push(
            key("function"),
            format!("expected 3 (holding) or 4 (input) (got {})", raw.function),
        );
    }
    let ty = check_type(&raw.ty, raw.registers, &key("type"), issues);
    if raw.registers.is_some() && ty.is_numeric() {
        issues.push(
            key("registers"),
            format!("applies to string points only (type {ty})"),
        );
    }
    if u32::from(raw.address) + u32::from(ty.registers()) > 0x1_0000 {
        issues.push(
            key("address"),
            format!(
                "{} registers at {} run past 65535",
                ty.registers(),
                raw.address
            ),
        );
    }
    let scale = match (raw.scale, raw.scale_register) {
        (Some(_), Some(_)) => {
            issues.push(key("scale"), "give scale or scale_register, not both");
            Scale::Constant(1.0)
        }
        (Some(f), None) => {
            if !(f.is_finite() && f != 0.0) {
                issues.push(
                    key("scale"),
                    format!("must be finite and non-zero (got {f})"),
                );
            }
            Scale::Constant(f)
        }
        (None, Some(r)) => Scale::Register(r),
        (None, None) => Scale::Constant(1.0),
    };
    if !ty.is_numeric()
        && (raw.scale.is_some() || raw.scale_register.is_some() || raw.range.is_some())
    {
        issues.push(key("type"), "a string point takes no scale or range");
    }
    let poll = match raw.poll.as_deref() {
        None | Some("fast") => Poll::Fast,
        Some("slow") => Poll::Slow,
        Some(other) => {
            issues.push(
                key("poll"),
                format!("expected fast or slow (got {other:?})"),
            );
            Poll::Fast
        }
    };
    let bits = match (raw.shift, raw.mask) {
        (None, None) => None,
        (shift, mask) => {
            if !matches!(ty, ValueType::U16 | ValueType::U32 | ValueType::U64) {
                issues.push(
                    key("mask"),
                    format!("shift and mask apply to u16, u32 and u64 points (type {ty})"),
                );
            }
            let shift = shift.unwrap_or(0);
            if u32::from(shift) >= 16 * u32::from(ty.registers()) {
                issues.push(
                    key("shift"),
                    format!("{shift} bits shift everything out of a {ty}"),
                );
            }
            Some((shift, mask.unwrap_or(u64::MAX)))
        }
    };
    let mut states = BTreeMap::new();
    for (code, state) in raw.states.iter().flatten() {
        let k = key(&format!("states.{code}"));
        if ty.is_numeric() && code.parse::<u64>().is_err() {
            issues.push(k, "state codes of a numeric point are decimal integers");
            continue;
        }
        match StateValue::parse(kind, state) {
            Ok(v) => {
                states.insert(code.clone(), v);
            }
            Err(e) => issues.push(k, e),
        }
    }
    Point {
        name: name.to_string(),
        function: raw.function,
        address: raw.address,
        ty,
        order: parse_order(raw.word_order.as_deref(), &key("word_order"), issues),
        scale,
        unit: raw.unit.clone(),
        sign: parse_sign(raw.sign, &key("sign"), issues),
        range: raw.range.map(|r| parse_range(r, &key("range"), issues)),
        poll,
        states,
        bits,
        negative_when: raw
            .negative_when
            .as_ref()
            .map(|n| (n.point.clone(), n.mask)),
    }
}

fn check_setpoint(
    name: &str,
    raw: &RawSetpoint,
    key: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Setpoint {
    let ty = check_type(&raw.ty, None, &key("type"), issues);
    match (raw.function, ty.registers()) {
        (6, 1) | (16, _) => {}
        (6, n) => issues.push(
            key("function"),
            format!("function 6 writes one register; type {ty} needs {n} (use 16)"),
        ),
        (f, _) => issues.push(key("function"), format!("expected 6 or 16 (got {f})")),
    }
    if !ty.is_numeric() {
        issues.push(key("type"), "a setpoint is numeric");
    }
    let scale = raw.scale.unwrap_or(1.0);
    if !(scale.is_finite() && scale != 0.0) {
        issues.push(
            key("scale"),
            format!("must be finite and non-zero (got {scale})"),
        );
    }
    let (min, max) = parse_range(raw.range, &key("range"), issues);
    if !(min..=max).contains(&raw.safe) {
        issues.push(
            key("safe"),
            format!("must lie within range [{min}, {max}] (got {})", raw.safe),
        );
    }
    if raw.refresh_s == Some(0) {
        issues.push(key("refresh_s"), "must be > 0 when given");
    }
    Setpoint {
        name: name.to_string(),
        function: raw.function,
        address: raw.address,
        ty,
        order: parse_order(raw.word_order.as_deref(), &key("word_order"), issues),
        scale,
        unit: raw.unit.clone(),
        sign: parse_sign(raw.sign, &key("sign"), issues),
        min,
        max,
        refresh: raw.refresh_s.map(|s| Duration::from_secs(u64::from(s))),
        safe: raw.safe,
        direction: raw.direction.as_ref().map(|d| Direction {
            address: d.address,
            positive: d.positive,
            negative: d.negative,
            zero: d.zero,
            negative_register: d.negative_register,
        }),
        prepare: raw.prepare.iter().map(|w| (w.address, w.value)).collect(),
        readback: raw.readback.clone(),
    }
}

fn check_probe(
    i: usize,
    raw: &RawProbe,
    points: &[Point],
    file: &str,
    issues: &mut Issues,
) -> Option<Probe> {
    let key = format!("{file}: probe[{i}]");
    let Some(point) = points.iter().find(|p| p.name == raw.point) else {
        issues.push(
            format!("{key}.point"),
            format!("names {:?}, which is not under [points]", raw.point),
        );
        return None;
    };
    let check = match (&raw.range, &raw.equals, &raw.starts_with) {
        (Some(r), None, None) if point.ty.is_numeric() => {
            let (lo, hi) = parse_range(*r, &format!("{key}.range"), issues);
            ProbeCheck::Range(lo, hi)
        }
        (None, Some(s), None) => ProbeCheck::Equals(s.clone()),
        (None, None, Some(s)) => ProbeCheck::StartsWith(s.clone()),
        _ => {
            issues.push(
                key,
                "give exactly one of range (numeric points), equals or starts_with",
            );
            return None;
        }
    };
    Some(Probe {
        point: raw.point.clone(),
        check,
    })
}

/// Push an issue for every pair of entries whose register spans overlap.
fn overlaps(spans: &mut [(u8, u32, u32, String)], file: &str, section: &str, issues: &mut Issues) {
    spans.sort_by_key(|(f, a, _, _)| (*f, *a));
    for pair in spans.windows(2) {
        let [(fa, _, end_a, a), (fb, start_b, _, b)] = pair else {
            continue;
        };
        if fa == fb && start_b < end_a {
            issues.push(
                format!("{file}: {section}.{b}.address"),
                format!("register {start_b} overlaps {section}.{a} (function {fa})"),
            );
        }
    }
}

/// Points that refer to other points, and direction-encoded setpoints.
fn check_links(p: &Profile, issues: &mut Issues) {
    let file = &p.file;
    for pt in &p.points {
        let Some((other, _)) = &pt.negative_when else {
            continue;
        };
        let key = format!("{file}: points.{}.negative_when.point", pt.name);
        match p.point(other) {
            None => issues.push(key, format!("names {other:?}, which is not under [points]")),
            Some(o) if !matches!(o.ty, ValueType::U16 | ValueType::U32 | ValueType::U64) => issues
                .push(
                    key,
                    format!("{other} must be an unsigned flags point (type {})", o.ty),
                ),
            Some(o) if o.negative_when.is_some() => issues.push(
                key,
                format!("{other} takes its own sign from another point"),
            ),
            Some(_) => {}
        }
    }
    for sp in &p.setpoints {
        if sp.direction.is_some() && !matches!(sp.ty, ValueType::U16 | ValueType::U32) {
            issues.push(
                format!("{file}: setpoints.{}.type", sp.name),
                "a direction-encoded setpoint writes its magnitude as u16 or u32",
            );
        }
    }
}

fn check_roles(kind: ProfileKind, p: &Profile, issues: &mut Issues) {
    let file = &p.file;
    for (name, unit, required) in kind.known_points() {
        match p.point(name) {
            None if *required => issues.push(
                format!("{file}: points"),
                format!("a {} profile needs point {name:?}", kind.as_str()),
            ),
            Some(pt) if !unit.is_empty() && pt.unit != *unit => issues.push(
                format!("{file}: points.{name}.unit"),
                format!(
                    "must be {unit:?} (scale the raw value into it; got {:?})",
                    pt.unit
                ),
            ),
            Some(pt) if unit.is_empty() && pt.states.is_empty() => issues.push(
                format!("{file}: points.{name}.states"),
                "a state point needs a state map",
            ),
            _ => {}
        }
    }
    for (name, unit, required) in kind.known_setpoints() {
        match p.setpoint(name) {
            None if *required => issues.push(
                format!("{file}: setpoints"),
                format!("a {} profile needs setpoint {name:?}", kind.as_str()),
            ),
            Some(sp) if sp.unit != *unit => issues.push(
                format!("{file}: setpoints.{name}.unit"),
                format!("must be {unit:?} (got {:?})", sp.unit),
            ),
            _ => {}
        }
    }
    for sp in &p.setpoints {
        if !kind.known_setpoints().iter().any(|(n, _, _)| *n == sp.name) {
            let known: Vec<&str> = kind.known_setpoints().iter().map(|(n, _, _)| *n).collect();
            issues.push(
                format!("{file}: setpoints.{}", sp.name),
                format!("a {} profile takes setpoints {known:?} only", kind.as_str()),
            );
        }
    }
}

/// Validate a parsed profile named `name`, read from `file`.
pub fn check(name: &str, file: &str, raw: &RawProfile) -> Result<Profile, Issues> {
    let mut issues = Issues::new();
    let kind = ProfileKind::parse(&raw.device.kind);
    if kind.is_none() {
        issues.push(
            format!("{file}: device.kind"),
            format!(
                "expected meter, pv, battery or charger (got {:?})",
                raw.device.kind
            ),
        );
    }
    if raw.device.source.trim().is_empty() {
        issues.push(
            format!("{file}: device.source"),
            "cite the vendor document the map is written from",
        );
    }
    let slow_every = raw.device.slow_every.unwrap_or(10);
    if slow_every == 0 {
        issues.push(format!("{file}: device.slow_every"), "must be >= 1");
    }
    let points: Vec<Point> = raw
        .points
        .iter()
        .map(|(n, p)| {
            check_point(
                kind,
                n,
                p,
                &|f| format!("{file}: points.{n}.{f}"),
                &mut issues,
            )
        })
        .collect();
    let setpoints: Vec<Setpoint> = raw
        .setpoints
        .iter()
        .map(|(n, s)| check_setpoint(n, s, &|f| format!("{file}: setpoints.{n}.{f}"), &mut issues))
        .collect();
    let probe: Vec<Probe> = raw
        .probe
        .iter()
        .enumerate()
        .filter_map(|(i, r)| check_probe(i, r, &points, file, &mut issues))
        .collect();
    for s in &setpoints {
        if let Some(r) = s
            .readback
            .as_ref()
            .filter(|r| !points.iter().any(|p| &p.name == *r))
        {
            issues.push(
                format!("{file}: setpoints.{}.readback", s.name),
                format!("names no point ({r:?})"),
            );
        }
    }
    if probe.is_empty() {
        issues.push(
            format!("{file}: probe"),
            "at least one identification check is required",
        );
    }
    let mut spans: Vec<_> = points
        .iter()
        .map(|p| {
            let (a, b) = p.span();
            (p.function, a, b, p.name.clone())
        })
        .collect();
    overlaps(&mut spans, file, "points", &mut issues);
    let mut spans: Vec<_> = setpoints
        .iter()
        .map(|s| {
            (
                0,
                u32::from(s.address),
                u32::from(s.address) + u32::from(s.ty.registers()),
                s.name.clone(),
            )
        })
        .chain(setpoints.iter().filter_map(|s| {
            let r = u32::from(s.direction?.negative_register?);
            Some((
                0,
                r,
                r + u32::from(s.ty.registers()),
                format!("{}.direction.negative_register", s.name),
            ))
        }))
        .collect();
    overlaps(&mut spans, file, "setpoints", &mut issues);
    let profile = Profile {
        name: name.to_string(),
        file: file.to_string(),
        kind: kind.unwrap_or(ProfileKind::Meter),
        vendor: raw.device.vendor.clone(),
        model: raw.device.model.clone(),
        source: raw.device.source.clone(),
        slow_every: slow_every.max(1),
        probe,
        points,
        setpoints,
    };
    if let Some(kind) = kind {
        check_roles(kind, &profile, &mut issues);
    }
    check_links(&profile, &mut issues);
    if issues.is_empty() {
        Ok(profile)
    } else {
        Err(issues)
    }
}

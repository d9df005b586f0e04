//! A device profile file (`config/profiles/<model>.toml`) read by the simulator: only what it
//! needs to present a device with that register map. Written independently of the
//! controller's profile checker (the simulator never depends on the controller); the
//! controller validates profiles for real, this reader refuses what it cannot serve.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Why a profile cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("profile {file}: {problem}")]
pub struct ProfileError {
    pub file: String,
    pub problem: String,
}

/// Value types of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Text(u16),
}

impl Ty {
    fn parse(s: &str, registers: Option<u16>) -> Option<Self> {
        Some(match s {
            "u16" => Self::U16,
            "i16" => Self::I16,
            "u32" => Self::U32,
            "i32" => Self::I32,
            "u64" => Self::U64,
            "i64" => Self::I64,
            "f32" => Self::F32,
            "f64" => Self::F64,
            "string" => Self::Text(registers.filter(|n| (1..=125).contains(n))?),
            _ => return None,
        })
    }

    /// Registers the value occupies.
    pub fn registers(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
            Self::Text(n) => n,
        }
    }
}

/// How a point's number is scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleOf {
    Constant(f64),
    /// A power-of-ten exponent (i16) at this register.
    Register(u16),
}

/// One readable point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMap {
    pub name: String,
    pub address: u16,
    pub ty: Ty,
    pub low_first: bool,
    pub scale: ScaleOf,
    pub sign: f64,
    pub bits: Option<(u8, u64)>,
    pub negative_when: Option<(String, u64)>,
    pub range: Option<(f64, f64)>,
    /// Raw code (decimal, or the text of a string point) and the state it means.
    pub states: Vec<(String, String)>,
}

/// The command register of a magnitude-plus-direction setpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionMap {
    pub address: u16,
    pub positive: u16,
    pub negative: u16,
    pub zero: u16,
    /// The magnitude register of negative values, when it is not the setpoint's own.
    pub negative_register: Option<u16>,
}

impl DirectionMap {
    /// The magnitude register for a value of sign `v` (`own`: the setpoint's address).
    pub fn register_for(self, own: u16, v: f64) -> u16 {
        match self.negative_register {
            Some(r) if v < 0.0 => r,
            _ => own,
        }
    }
}

/// One writable setpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SetpointMap {
    pub name: String,
    pub address: u16,
    pub ty: Ty,
    pub low_first: bool,
    pub scale: f64,
    pub sign: f64,
    pub min: f64,
    pub max: f64,
    pub refresh_s: Option<u32>,
    pub direction: Option<DirectionMap>,
    pub prepare: Vec<(u16, u16)>,
}

/// What an identification probe expects of a point.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Range(f64, f64),
    Equals(String),
    StartsWith(String),
}

/// A profile as the simulator serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileMap {
    /// The file stem (`chint-dtsu666`).
    pub name: String,
    /// `meter`, `pv`, `battery` or `charger`.
    pub kind: String,
    pub vendor: String,
    pub model: String,
    pub points: Vec<PointMap>,
    pub setpoints: Vec<SetpointMap>,
    pub probes: Vec<(String, Expect)>,
}

#[derive(Deserialize)]
struct RawFile {
    device: RawDevice,
    #[serde(default)]
    probe: Vec<RawProbe>,
    #[serde(default)]
    points: BTreeMap<String, RawPoint>,
    #[serde(default)]
    setpoints: BTreeMap<String, RawSetpoint>,
}

#[derive(Deserialize)]
struct RawDevice {
    kind: String,
    vendor: String,
    model: String,
}

#[derive(Deserialize)]
struct RawProbe {
    point: String,
    range: Option<[f64; 2]>,
    equals: Option<String>,
    starts_with: Option<String>,
}

#[derive(Deserialize)]
struct RawPoint {
    function: u8,
    address: u16,
    #[serde(rename = "type")]
    ty: String,
    registers: Option<u16>,
    word_order: Option<String>,
    scale: Option<f64>,
    scale_register: Option<u16>,
    shift: Option<u8>,
    mask: Option<u64>,
    negative_when: Option<RawNegativeWhen>,
    sign: Option<i8>,
    range: Option<[f64; 2]>,
    states: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RawNegativeWhen {
    point: String,
    mask: u64,
}

#[derive(Deserialize)]
struct RawSetpoint {
    address: u16,
    #[serde(rename = "type")]
    ty: String,
    word_order: Option<String>,
    scale: Option<f64>,
    sign: Option<i8>,
    range: [f64; 2],
    refresh_s: Option<u32>,
    direction: Option<RawDirection>,
    #[serde(default)]
    prepare: Vec<RawWrite>,
}

#[derive(Deserialize)]
struct RawDirection {
    address: u16,
    positive: u16,
    negative: u16,
    zero: u16,
    negative_register: Option<u16>,
}

#[derive(Deserialize)]
struct RawWrite {
    address: u16,
    value: u16,
}

fn low_first(order: Option<&str>, key: &str, problems: &mut Vec<String>) -> bool {
    match order {
        None | Some("high_first") => false,
        Some("low_first") => true,
        Some(other) => {
            problems.push(format!("{key}.word_order: unknown order {other:?}"));
            false
        }
    }
}

fn sign(s: Option<i8>, key: &str, problems: &mut Vec<String>) -> f64 {
    match s {
        None | Some(1) => 1.0,
        Some(-1) => -1.0,
        Some(other) => {
            problems.push(format!("{key}.sign: must be 1 or -1 (got {other})"));
            1.0
        }
    }
}

fn point(name: &str, r: &RawPoint, problems: &mut Vec<String>) -> Option<PointMap> {
    let key = format!("points.{name}");
    if r.function != 3 && r.function != 4 {
        problems.push(format!("{key}.function: must be 3 or 4"));
    }
    let Some(ty) = Ty::parse(&r.ty, r.registers) else {
        problems.push(format!("{key}.type: cannot serve {:?}", r.ty));
        return None;
    };
    let scale = match (r.scale, r.scale_register) {
        (_, Some(reg)) => ScaleOf::Register(reg),
        (Some(f), None) if f.is_finite() && f != 0.0 => ScaleOf::Constant(f),
        (None, None) => ScaleOf::Constant(1.0),
        (Some(f), None) => {
            problems.push(format!("{key}.scale: {f} cannot scale a value"));
            return None;
        }
    };
    Some(PointMap {
        name: name.to_string(),
        address: r.address,
        ty,
        low_first: low_first(r.word_order.as_deref(), &key, problems),
        scale,
        sign: sign(r.sign, &key, problems),
        bits: match (r.shift, r.mask) {
            (None, None) => None,
            (s, m) => Some((s.unwrap_or(0), m.unwrap_or(u64::MAX))),
        },
        negative_when: r.negative_when.as_ref().map(|n| (n.point.clone(), n.mask)),
        range: r.range.map(|[lo, hi]| (lo, hi)),
        states: r
            .states
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn setpoint(name: &str, r: &RawSetpoint, problems: &mut Vec<String>) -> Option<SetpointMap> {
    let key = format!("setpoints.{name}");
    let ty = match Ty::parse(&r.ty, None) {
        Some(Ty::Text(_)) | None => {
            problems.push(format!("{key}.type: cannot serve {:?}", r.ty));
            return None;
        }
        Some(t) => t,
    };
    let scale = r.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        problems.push(format!("{key}.scale: {scale} cannot scale a value"));
        return None;
    }
    Some(SetpointMap {
        name: name.to_string(),
        address: r.address,
        ty,
        low_first: low_first(r.word_order.as_deref(), &key, problems),
        scale,
        sign: sign(r.sign, &key, problems),
        min: r.range[0],
        max: r.range[1],
        refresh_s: r.refresh_s,
        direction: r.direction.as_ref().map(|d| DirectionMap {
            address: d.address,
            positive: d.positive,
            negative: d.negative,
            zero: d.zero,
            negative_register: d.negative_register,
        }),
        prepare: r.prepare.iter().map(|w| (w.address, w.value)).collect(),
    })
}

impl ProfileMap {
    /// Read a profile file; its stem names it.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: file.clone(),
            problem: format!("cannot read: {e}"),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&name, &file, &text)
    }

    /// Parse profile text; every problem is listed in one error.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Self, ProfileError> {
        let err = |problem: String| ProfileError {
            file: file.to_string(),
            problem,
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(e.to_string().trim().replace('\n', " ")))?;
        let mut problems = Vec::new();
        if !["meter", "pv", "battery", "pcs", "charger"].contains(&raw.device.kind.as_str()) {
            problems.push(format!("device.kind: unknown kind {:?}", raw.device.kind));
        }
        let points: Vec<PointMap> = raw
            .points
            .iter()
            .filter_map(|(n, p)| point(n, p, &mut problems))
            .collect();
        let setpoints: Vec<SetpointMap> = raw
            .setpoints
            .iter()
            .filter_map(|(n, s)| setpoint(n, s, &mut problems))
            .collect();
        let mut probes = Vec::new();
        for (i, p) in raw.probe.iter().enumerate() {
            let expect = match (&p.range, &p.equals, &p.starts_with) {
                (Some([lo, hi]), None, None) => Expect::Range(*lo, *hi),
                (None, Some(s), None) => Expect::Equals(s.clone()),
                (None, None, Some(s)) => Expect::StartsWith(s.clone()),
                _ => {
                    problems.push(format!(
                        "probe[{i}]: exactly one of range, equals, starts_with"
                    ));
                    continue;
                }
            };
            probes.push((p.point.clone(), expect));
        }
        let map = ProfileMap {
            name: name.to_string(),
            kind: match raw.device.kind.as_str() {
                "pcs" => "battery".to_string(),
                k => k.to_string(),
            },
            vendor: raw.device.vendor,
            model: raw.device.model,
            points,
            setpoints,
            probes,
        };
        map.check_overlaps(&mut problems);
        if problems.is_empty() {
            Ok(map)
        } else {
            Err(err(problems.join("; ")))
        }
    }

    /// The simulator serves FC3 and FC4 from one image: no two registers may collide.
    fn check_overlaps(&self, problems: &mut Vec<String>) {
        let mut owner: BTreeMap<u16, String> = BTreeMap::new();
        let mut claim = |from: u16, len: u16, who: String| {
            for a in (0..len).filter_map(|i| from.checked_add(i)) {
                if let Some(prev) = owner.insert(a, who.clone()) {
                    if prev != who {
                        problems.push(format!("register {a} is both {prev} and {who}"));
                    }
                }
            }
        };
        for p in &self.points {
            claim(p.address, p.ty.registers(), format!("points.{}", p.name));
        }
        for s in &self.setpoints {
            // A setpoint may be read back through a point at the same register.
            if !self.points.iter().any(|p| p.address == s.address) {
                claim(s.address, s.ty.registers(), format!("setpoints.{}", s.name));
            }
            if let Some(d) = s.direction {
                claim(d.address, 1, format!("setpoints.{}.direction", s.name));
                if let Some(r) = d.negative_register {
                    claim(
                        r,
                        s.ty.registers(),
                        format!("setpoints.{}.negative_register", s.name),
                    );
                }
            }
        }
    }

    /// The point named `name`.
    pub fn point(&self, name: &str) -> Option<&PointMap> {
        self.points.iter().find(|p| p.name == name)
    }

    /// What the identification probe expects of point `name`.
    pub fn expectation(&self, name: &str) -> Option<&Expect> {
        self.probes.iter().find(|(p, _)| p == name).map(|(_, e)| e)
    }
}

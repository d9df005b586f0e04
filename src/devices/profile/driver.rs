//! The generic profile driver: reads a profile's points over a [`Link`], checks the
//! identification probe once per connection, and maps the points into the same readings the
//! built-in drivers produce (`MeterReading`, `PvReading`, `BatteryReading`), so dispatch does
//! not know which driver read a device.

use super::decode::{self, Raw};
use super::model::{
    Point, Poll, Probe, ProbeCheck, Profile, ProfileKind, Scale, Setpoint, StateName, StateValue,
};
use crate::devices::battery::{BatteryReading, BatteryState};
use crate::devices::charger::ChargerReading;
use crate::devices::check;
use crate::devices::error::{DeviceError, FC_WRITE_SINGLE};
use crate::devices::link::{Link, LinkConfig, MAX_READ_REGS};
use crate::devices::meter::MeterReading;
use crate::devices::pv::{InverterStatus, PvReading};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

/// A decoded point value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Scaled and signed engineering value.
    Number(f64),
    /// Text (model names, serial numbers).
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Six decimals at most, trailing zeros cut: 230.1, not 230.10000000000002.
            Value::Number(v) => {
                let text = format!("{v:.6}");
                let text = text.trim_end_matches('0').trim_end_matches('.');
                f.write_str(if text == "-0" { "0" } else { text })
            }
            Value::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// One point as read: its registers and its value or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRead {
    pub name: String,
    pub words: Vec<u16>,
    pub value: Result<Value, DeviceError>,
}

/// What a profiled device reads into, by its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfiledReading {
    Meter(MeterReading),
    Pv(PvReading),
    Battery(BatteryReading),
    Charger(ChargerReading),
}

/// Device-side options of a profiled device (from the station config).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfiledConfig {
    pub link: LinkConfig,
    /// Flip the sign of powers (and swap a meter's import/export) on top of the profile's sign.
    pub invert: bool,
    /// Rating W for plausibility (and the PV rating when the profile has no `rating_w`).
    pub rating_w: Option<f64>,
}

/// Name of a point with its register, as errors and the probe output name it.
pub fn point_label(p: &Point) -> String {
    format!(
        "{} (function {}, register {} = 0x{:04X})",
        p.name, p.function, p.address, p.address
    )
}

/// Turn the words of a point (and its scale factor, if any) into its value; out-of-range,
/// non-finite and undecodable values are `BadData` naming the point and its register.
pub fn evaluate(p: &Point, words: &[u16], sf: Option<i16>) -> Result<Value, DeviceError> {
    let label = point_label(p);
    let raw = decode::decode(words, p.ty, p.order).ok_or_else(|| {
        DeviceError::bad_data(&label, format!("{} registers too few", words.len()))
    })?;
    let n = match raw {
        Raw::Text(t) => return Ok(Value::Text(t)),
        Raw::Number(n) => n,
    };
    let n = match p.bits {
        // Unsigned points only (checked): the number is an exact integer below 2^64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some((shift, mask)) => {
            ((n as u64).checked_shr(u32::from(shift)).unwrap_or(0) & mask) as f64
        }
        None => n,
    };
    let factor = match (p.scale, sf) {
        (Scale::Constant(f), _) => f,
        (Scale::Register(_), Some(sf)) if (-10..=10).contains(&sf) => 10f64.powi(i32::from(sf)),
        (Scale::Register(r), sf) => {
            return Err(DeviceError::bad_data(
                &label,
                format!("scale factor at register {r} is {sf:?}, outside -10..=10"),
            ))
        }
    };
    let v = check::finite(&label, n * factor * p.sign)?;
    if let Some((lo, hi)) = p.range {
        if !(lo..=hi).contains(&v) {
            return Err(DeviceError::bad_data(
                &label,
                format!("{v} {} outside the plausible range [{lo}, {hi}]", p.unit),
            ));
        }
    }
    Ok(Value::Number(v))
}

/// The state map key of a value: the decimal code of a number, the text of a string.
pub fn state_key(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n:.0}"),
        Value::Text(t) => t.clone(),
    }
}

/// A request plan: contiguous runs of registers per function code, at most 125 each.
fn plan(spans: &mut [(u8, u32, u32)]) -> Vec<(u8, u16, u16)> {
    spans.sort_unstable();
    let mut runs: Vec<(u8, u32, u32)> = Vec::new();
    for &(f, a, b) in spans.iter() {
        match runs.last_mut() {
            Some((rf, ra, rb))
                if *rf == f && a <= *rb && b.max(*rb) - *ra <= u32::from(MAX_READ_REGS) =>
            {
                *rb = b.max(*rb);
            }
            _ => runs.push((f, a, b)),
        }
    }
    runs.into_iter()
        .filter_map(|(f, a, b)| Some((f, u16::try_from(a).ok()?, u16::try_from(b - a).ok()?)))
        .collect()
}

/// The requests (function, address, count) one fast read of `profile` sends: every fast point
/// and its scale-factor register, in contiguous runs. The bus budget is built from these.
pub fn fast_requests(profile: &Profile) -> Vec<(u8, u16, u16)> {
    let mut spans: Vec<(u8, u32, u32)> = Vec::new();
    for p in profile.points.iter().filter(|p| p.poll == Poll::Fast) {
        let (a, b) = p.span();
        spans.push((p.function, a, b));
        if let Scale::Register(r) = p.scale {
            spans.push((p.function, u32::from(r), u32::from(r) + 1));
        }
    }
    plan(&mut spans)
}

/// Read the registers of `points` (and their scale-factor registers) in as few requests as
/// contiguous runs allow; returns every register read by (function, address).
async fn read_words(
    link: &mut Link,
    points: &[&Point],
) -> Result<BTreeMap<(u8, u16), u16>, DeviceError> {
    let mut spans: Vec<(u8, u32, u32)> = points
        .iter()
        .map(|p| {
            let (a, b) = p.span();
            (p.function, a, b)
        })
        .collect();
    for p in points {
        if let Scale::Register(r) = p.scale {
            spans.push((p.function, u32::from(r), u32::from(r) + 1));
        }
    }
    let mut words = BTreeMap::new();
    for (f, addr, n) in plan(&mut spans) {
        let got = link.read_registers(f, addr, n).await?;
        for (i, w) in (addr..).zip(got) {
            words.insert((f, i), w);
        }
    }
    Ok(words)
}

fn words_of(words: &BTreeMap<(u8, u16), u16>, p: &Point) -> Vec<u16> {
    (0..p.ty.registers())
        .filter_map(|i| words.get(&(p.function, p.address.checked_add(i)?)).copied())
        .collect()
}

fn sf_of(words: &BTreeMap<(u8, u16), u16>, p: &Point) -> Option<i16> {
    match p.scale {
        Scale::Register(r) => words
            .get(&(p.function, r))
            .map(|w| i16::from_be_bytes(w.to_be_bytes())),
        Scale::Constant(_) => None,
    }
}

/// Whether a probe check holds for a value.
pub fn probe_holds(check: &ProbeCheck, v: &Value) -> bool {
    match (check, v) {
        (ProbeCheck::Range(lo, hi), Value::Number(n)) => (*lo..=*hi).contains(n),
        (ProbeCheck::Equals(s), Value::Text(t)) => t == s,
        (ProbeCheck::StartsWith(s), Value::Text(t)) => t.starts_with(s.as_str()),
        (ProbeCheck::Equals(s), Value::Number(n)) => s.parse::<f64>().is_ok_and(|e| e == *n),
        _ => false,
    }
}

/// A device driven by a profile.
#[derive(Debug)]
pub struct ProfileDevice {
    link: Link,
    profile: Arc<Profile>,
    cfg: ProfiledConfig,
    /// `connects` count of the link when the probe last passed.
    identified_on: Option<u64>,
    reads: u64,
    /// Last values of the slow points.
    slow: BTreeMap<String, Value>,
    /// Last value written per setpoint.
    written: BTreeMap<String, f64>,
    /// When `current_a` was last written (chargers: the setpoint's remaining validity).
    current_written_at: Option<Instant>,
    /// The current a charger falls back to (configured by the daemon).
    safe_current_a: Option<f64>,
    /// `connects` count of the link when the setpoints' `prepare` writes were made.
    prepared_on: Option<u64>,
}

impl ProfileDevice {
    /// A driver that connects lazily and probes on every new connection.
    pub fn new(profile: Arc<Profile>, cfg: ProfiledConfig) -> Self {
        ProfileDevice {
            link: Link::new(cfg.link.clone()),
            profile,
            cfg,
            identified_on: None,
            reads: 0,
            slow: BTreeMap::new(),
            written: BTreeMap::new(),
            current_written_at: None,
            safe_current_a: None,
            prepared_on: None,
        }
    }

    /// The link (state, counters).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The link, to drop its connection from outside (an abandoned request).
    pub fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Read the probe points and check every identification rule; the first failure is
    /// `BadData` naming the probe's point and the expectation.
    pub async fn identify(&mut self) -> Result<(), DeviceError> {
        let profile = Arc::clone(&self.profile);
        for probe in &profile.probe {
            self.check_probe(probe).await?;
        }
        self.identified_on = Some(self.link.stats().connects);
        tracing::info!(profile = %profile.name, "identification probe passed");
        Ok(())
    }

    async fn check_probe(&mut self, probe: &Probe) -> Result<(), DeviceError> {
        let point = self
            .profile
            .point(&probe.point)
            .ok_or_else(|| DeviceError::bad_data(&probe.point, "probe names no point"))?
            .clone();
        let words = read_words(&mut self.link, &[&point]).await?;
        let v = evaluate(&point, &words_of(&words, &point), sf_of(&words, &point))?;
        if probe_holds(&probe.check, &v) {
            Ok(())
        } else {
            Err(DeviceError::bad_data(
                &format!("probe {}", point_label(&point)),
                format!(
                    "{v} does not match {:?}: is this device a {} {}?",
                    probe.check, self.profile.vendor, self.profile.model
                ),
            ))
        }
    }

    /// Read every point one by one (the commissioning view): a failing point does not hide
    /// the others. Transport failures still end the walk.
    pub async fn read_each(&mut self) -> Result<Vec<PointRead>, DeviceError> {
        let profile = Arc::clone(&self.profile);
        let mut out = Vec::with_capacity(profile.points.len());
        for p in &profile.points {
            match read_words(&mut self.link, &[p]).await {
                Ok(words) => out.push(PointRead {
                    name: p.name.clone(),
                    words: words_of(&words, p),
                    value: evaluate(p, &words_of(&words, p), sf_of(&words, p)),
                }),
                Err(e) if e.is_link_failure() => return Err(e),
                Err(e) => out.push(PointRead {
                    name: p.name.clone(),
                    words: Vec::new(),
                    value: Err(e),
                }),
            }
        }
        let mut values: BTreeMap<String, Value> = out
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.value.clone().ok()?)))
            .collect();
        apply_negative_when(&profile, &mut values);
        for r in &mut out {
            if let (Ok(v), Some(signed)) = (&mut r.value, values.get(&r.name)) {
                *v = signed.clone();
            }
        }
        Ok(out)
    }

    /// Read the fast points (and the slow ones every `slow_every` reads), probing first on a
    /// new connection, and map them into the kind's reading.
    pub async fn read(&mut self) -> Result<ProfiledReading, DeviceError> {
        if !self.link.is_connected() || self.identified_on != Some(self.link.stats().connects) {
            self.identify().await?;
        }
        let slow_due = self.reads % u64::from(self.profile.slow_every) == 0;
        self.reads += 1;
        let profile = Arc::clone(&self.profile);
        let fast: Vec<&Point> = profile
            .points
            .iter()
            .filter(|p| p.poll == Poll::Fast || slow_due)
            .collect();
        // Flags that give a due point its sign are read with it.
        let due: Vec<&Point> = profile
            .points
            .iter()
            .filter(|p| {
                fast.iter().any(|f| f.name == p.name)
                    || fast
                        .iter()
                        .any(|f| f.negative_when.as_ref().is_some_and(|(o, _)| *o == p.name))
            })
            .collect();
        let words = read_words(&mut self.link, &due).await?;
        let mut values = BTreeMap::new();
        for p in &due {
            let v = evaluate(p, &words_of(&words, p), sf_of(&words, p))?;
            if p.poll == Poll::Slow {
                self.slow.insert(p.name.clone(), v.clone());
            }
            values.insert(p.name.clone(), v);
        }
        for (k, v) in &self.slow {
            values.entry(k.clone()).or_insert_with(|| v.clone());
        }
        apply_negative_when(&profile, &mut values);
        let written = Written {
            limit_pct: self.written.get("limit_pct").copied(),
            current_a: self.written.get("current_a").copied(),
            remaining_validity_s: self.remaining_validity(),
        };
        reading_of(&profile, &self.cfg, &values, written)
    }

    /// The `prepare` writes of every setpoint, once per connection.
    async fn prepare(&mut self) -> Result<(), DeviceError> {
        let connects = self.link.stats().connects;
        if self.link.is_connected() && self.prepared_on == Some(connects) {
            return Ok(());
        }
        let writes: Vec<(u16, u16)> = self
            .profile
            .setpoints
            .iter()
            .flat_map(|s| s.prepare.iter().copied())
            .collect();
        for (address, value) in writes {
            self.link.write_single(address, value).await?;
        }
        self.prepared_on = Some(self.link.stats().connects);
        Ok(())
    }

    /// Write a setpoint in engineering units, clamped into its range; returns the value sent.
    /// A direction-encoded setpoint writes its command code, then its magnitude.
    pub async fn write_setpoint(&mut self, name: &str, value: f64) -> Result<f64, DeviceError> {
        let sp = self
            .profile
            .setpoint(name)
            .ok_or_else(|| {
                DeviceError::InvalidRequest(format!(
                    "profile {} has no setpoint {name}",
                    self.profile.name
                ))
            })?
            .clone();
        if !value.is_finite() {
            return Err(DeviceError::InvalidRequest(format!(
                "{name}: {value} is not finite"
            )));
        }
        let v = value.clamp(sp.min, sp.max);
        if !sp.prepare.is_empty() {
            self.prepare().await?;
        }
        // One magnitude register per direction: the magnitude first, so the command never
        // starts with a stale one; one shared register: the command first.
        let value_first = sp.direction.is_some_and(|d| d.negative_register.is_some());
        if let Some(dir) = sp.direction.filter(|_| !value_first) {
            self.link.write_single(dir.address, dir.code(v)).await?;
        }
        let words = encode_setpoint(&sp, v)?;
        let register = sp
            .direction
            .map_or(sp.address, |d| d.register_for(sp.address, v));
        if sp.function == FC_WRITE_SINGLE {
            let w = words
                .first()
                .copied()
                .ok_or_else(|| DeviceError::InvalidRequest(format!("{name}: nothing to write")))?;
            self.link.write_single(register, w).await?;
        } else {
            self.link.write_multiple(register, &words).await?;
        }
        if let Some(dir) = sp.direction.filter(|_| value_first) {
            self.link.write_single(dir.address, dir.code(v)).await?;
        }
        self.written.insert(sp.name.clone(), v);
        if sp.name == "current_a" {
            self.current_written_at = Some(Instant::now());
        }
        Ok(v)
    }

    /// Read a setpoint back: through its `readback` point when it has one, else its register
    /// decoded with the setpoint's encoding.
    pub async fn read_setpoint(&mut self, name: &str) -> Result<f64, DeviceError> {
        let readback = self
            .profile
            .setpoint(name)
            .and_then(|s| s.readback.as_ref())
            .and_then(|r| self.profile.point(r))
            .cloned();
        if let Some(point) = readback {
            let words = read_words(&mut self.link, &[&point]).await?;
            return match evaluate(&point, &words_of(&words, &point), sf_of(&words, &point))? {
                Value::Number(n) => Ok(n),
                Value::Text(t) => Err(DeviceError::bad_data(
                    &point_label(&point),
                    format!("reads back text {t:?}, not a number"),
                )),
            };
        }
        self.read_setpoint_register(name).await
    }

    async fn read_setpoint_register(&mut self, name: &str) -> Result<f64, DeviceError> {
        let sp = self
            .profile
            .setpoint(name)
            .ok_or_else(|| {
                DeviceError::InvalidRequest(format!(
                    "profile {} has no setpoint {name}",
                    self.profile.name
                ))
            })?
            .clone();
        // With one magnitude register per direction, the command says which one holds it.
        let register = match sp.direction.filter(|d| d.negative_register.is_some()) {
            Some(dir) => {
                let code = self.link.read_holding(dir.address, 1).await?;
                let sign = if code.first() == Some(&dir.negative) {
                    -1.0
                } else {
                    1.0
                };
                dir.register_for(sp.address, sign)
            }
            None => sp.address,
        };
        let words = self.link.read_holding(register, sp.ty.registers()).await?;
        let magnitude = match decode::decode(&words, sp.ty, sp.order) {
            // `+ 0.0`: a zero read through `sign = -1` is 0, not -0.
            Some(Raw::Number(n)) => n * sp.scale * sp.sign + 0.0,
            _ => {
                return Err(DeviceError::bad_data(
                    name,
                    "setpoint register does not decode",
                ))
            }
        };
        let Some(dir) = sp.direction else {
            return Ok(magnitude);
        };
        let code = self.link.read_holding(dir.address, 1).await?;
        match code.first().copied() {
            Some(c) if c == dir.positive => Ok(magnitude),
            Some(c) if c == dir.negative => Ok(-magnitude),
            Some(c) if c == dir.zero => Ok(0.0),
            other => Err(DeviceError::bad_data(
                name,
                format!(
                    "direction register {} holds {other:?}, no known code",
                    dir.address
                ),
            )),
        }
    }

    /// PV: the active power limit in % of the rating.
    pub async fn set_limit_pct(&mut self, pct: f64) -> Result<(), DeviceError> {
        self.write_setpoint("limit_pct", pct).await.map(|_| ())
    }

    /// Battery: the power setpoint W, discharge > 0 (the device `invert` flag applied).
    pub async fn set_power_w(&mut self, w: f64) -> Result<(), DeviceError> {
        let w = check::signed(w, self.cfg.invert);
        self.write_setpoint("power_w", w).await.map(|_| ())
    }

    /// Seconds until a charger's current setpoint lapses on the device (its `refresh_s` after
    /// the last write; 0 before any write, `u32::MAX` when the setpoint never lapses).
    fn remaining_validity(&self) -> u32 {
        let Some(refresh) = self.profile.setpoint("current_a").and_then(|s| s.refresh) else {
            return u32::MAX;
        };
        self.current_written_at.map_or(0, |at| {
            let left = refresh.saturating_sub(at.elapsed()).as_secs();
            u32::try_from(left).unwrap_or(u32::MAX)
        })
    }

    /// Charger: write the maximum current A.
    pub async fn set_current(&mut self, amps: f64) -> Result<(), DeviceError> {
        self.write_setpoint("current_a", amps).await.map(|_| ())
    }

    /// Charger: remember the safe current and write it as the device's own fallback where the
    /// profile has one (`fallback_current_a`), then read it back: a charger that refuses it or
    /// holds another value is an error naming both (the daemon shows the device degraded).
    pub async fn configure_fallback(&mut self, safe_current_a: f64) -> Result<(), DeviceError> {
        self.safe_current_a = Some(safe_current_a);
        let Some(sp) = self.profile.setpoint("fallback_current_a").cloned() else {
            return Ok(());
        };
        let sent = self
            .write_setpoint("fallback_current_a", safe_current_a)
            .await?;
        let held = self.read_setpoint("fallback_current_a").await?;
        // One step of the register's resolution (plus float noise) is the same value.
        if (held - sent).abs() > sp.scale.abs() / 2.0 + 1e-6 {
            return Err(DeviceError::bad_data(
                &format!("fallback_current_a (register {})", sp.address),
                format!("wrote {sent} A, the charger holds {held} A"),
            ));
        }
        Ok(())
    }

    /// Charger: put the current setpoint at the configured safe current (or the profile's safe
    /// value before one was configured).
    pub async fn safe_current(&mut self) -> Result<(), DeviceError> {
        let safe = match (self.safe_current_a, self.profile.setpoint("current_a")) {
            (Some(a), _) => a,
            (None, Some(sp)) => sp.safe,
            (None, None) => return Ok(()),
        };
        self.set_current(safe).await
    }

    /// Write every setpoint's safe value (shutdown); the first failure is returned after all
    /// were tried.
    pub async fn safe(&mut self) -> Result<(), DeviceError> {
        let profile = Arc::clone(&self.profile);
        let mut first_err = None;
        for sp in &profile.setpoints {
            if let Err(e) = self.write_setpoint(&sp.name, sp.safe).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// What the driver wrote that a reading reports (PV limit, charger current and validity).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Written {
    pub limit_pct: Option<f64>,
    pub current_a: Option<f64>,
    pub remaining_validity_s: u32,
}

/// Map decoded point values (signs already applied) into the reading of the profile's kind.
pub fn reading_of(
    profile: &Profile,
    cfg: &ProfiledConfig,
    values: &BTreeMap<String, Value>,
    written: Written,
) -> Result<ProfiledReading, DeviceError> {
    let view = Values { profile, values };
    match profile.kind {
        ProfileKind::Meter => view.meter(cfg).map(ProfiledReading::Meter),
        ProfileKind::Pv => view.pv(cfg, written.limit_pct).map(ProfiledReading::Pv),
        ProfileKind::Battery => view.battery(cfg).map(ProfiledReading::Battery),
        ProfileKind::Charger => view
            .charger(cfg, written.current_a, written.remaining_validity_s)
            .map(ProfiledReading::Charger),
    }
}

/// Decode a whole register image (function, address) -> word through `profile` into its
/// reading, as one read of every point would: the pure core of [`ProfileDevice::read`], for
/// tests. The first point that is missing or implausible is the error.
pub fn decode_image(
    profile: &Profile,
    cfg: &ProfiledConfig,
    words: &BTreeMap<(u8, u16), u16>,
) -> Result<ProfiledReading, DeviceError> {
    let mut values = BTreeMap::new();
    for p in &profile.points {
        let v = evaluate(p, &words_of(words, p), sf_of(words, p))?;
        values.insert(p.name.clone(), v);
    }
    apply_negative_when(profile, &mut values);
    reading_of(profile, cfg, &values, Written::default())
}

/// Negate the points whose `negative_when` flag is set in this read.
fn apply_negative_when(profile: &Profile, values: &mut BTreeMap<String, Value>) {
    for p in &profile.points {
        let Some((flag, mask)) = &p.negative_when else {
            continue;
        };
        // Flags points are unsigned integers (checked).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let set = matches!(values.get(flag), Some(Value::Number(f)) if (*f as u64) & mask != 0);
        if let (true, Some(Value::Number(v))) = (set, values.get_mut(&p.name)) {
            *v = -*v;
        }
    }
}

/// The words of a setpoint value (engineering units, within its range); a direction-encoded
/// setpoint writes its magnitude.
pub fn encode_setpoint(sp: &Setpoint, v: f64) -> Result<Vec<u16>, DeviceError> {
    let v = if sp.direction.is_some() { v.abs() } else { v };
    decode::encode(v * sp.sign / sp.scale, sp.ty, sp.order).map_err(|e| {
        DeviceError::InvalidRequest(format!(
            "setpoint {} (register {}): {e}",
            sp.name, sp.address
        ))
    })
}

/// The values of one read, mapped into readings.
struct Values<'a> {
    profile: &'a Profile,
    values: &'a BTreeMap<String, Value>,
}

impl Values<'_> {
    fn num(&self, name: &str) -> Option<f64> {
        match self.values.get(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    fn label(&self, name: &str) -> String {
        self.profile
            .point(name)
            .map_or_else(|| name.to_string(), point_label)
    }

    fn required(&self, name: &str) -> Result<f64, DeviceError> {
        check::required(&self.label(name), self.num(name))
    }

    /// The state point's key (decimal code or text) and what the state map makes of it.
    fn state(&self, name: &str) -> Option<(String, Option<StateValue>)> {
        let p = self.profile.point(name)?;
        let key = state_key(self.values.get(name)?);
        let v = p.states.get(&key).copied();
        Some((key, v))
    }

    fn operating(&self, name: &str) -> Option<(u16, Option<StateName>)> {
        self.state(name).map(|(key, v)| {
            let code = key.parse::<u16>().unwrap_or(u16::MAX);
            match v {
                Some(StateValue::Operating(s)) => (code, Some(s)),
                _ => (code, None),
            }
        })
    }

    fn meter(&self, cfg: &ProfiledConfig) -> Result<MeterReading, DeviceError> {
        let inv = cfg.invert;
        let power = |name: &str, v: f64| {
            check::power_within(&self.label(name), check::signed(v, inv), cfg.rating_w)
        };
        let power_w = power("power_w", self.required("power_w")?)?;
        let mut phase_w = [None; 3];
        for (slot, name) in phase_w
            .iter_mut()
            .zip(["power_l1_w", "power_l2_w", "power_l3_w"])
        {
            *slot = self.num(name).map(|v| power(name, v)).transpose()?;
        }
        let (imp, exp) = (self.num("import_wh"), self.num("export_wh"));
        let (import_wh, export_wh) = if inv { (exp, imp) } else { (imp, exp) };
        Ok(MeterReading {
            power_w,
            phase_w,
            frequency_hz: self.num("frequency_hz"),
            import_wh,
            export_wh,
        })
    }

    fn pv(&self, cfg: &ProfiledConfig, limit_pct: Option<f64>) -> Result<PvReading, DeviceError> {
        let rating_w = self.num("rating_w").or(cfg.rating_w).unwrap_or(0.0);
        let rating = Some(rating_w).filter(|r| *r > 0.0);
        let power_w = check::power_within(
            &self.label("power_w"),
            check::signed(self.required("power_w")?, cfg.invert),
            rating,
        )?;
        let status = self.operating("status").map(|(code, s)| match s {
            Some(StateName::Operating) => InverterStatus::Mppt,
            Some(StateName::Throttled) => InverterStatus::Throttled,
            Some(StateName::Standby) => InverterStatus::Standby,
            Some(StateName::Fault) => InverterStatus::Fault,
            Some(StateName::Off) => InverterStatus::Off,
            Some(StateName::Starting) => InverterStatus::Starting,
            None => InverterStatus::Other(code),
        });
        Ok(PvReading {
            power_w,
            energy_wh: self.num("energy_wh"),
            rating_w,
            limit_pct: limit_pct.or_else(|| self.profile.setpoint("limit_pct").map(|_| 100.0)),
            status,
            dc_power_w: self.num("dc_power_w").map(|v| check::signed(v, cfg.invert)),
            frequency_hz: self.num("frequency_hz"),
        })
    }

    fn charger(
        &self,
        cfg: &ProfiledConfig,
        applied: Option<f64>,
        validity_s: u32,
    ) -> Result<ChargerReading, DeviceError> {
        let state = match self.state("state") {
            Some((_, Some(StateValue::Iec61851(m)))) => m,
            Some((key, _)) => {
                return Err(DeviceError::bad_data(
                    &self.label("state"),
                    format!("state {key:?} is not in the state map"),
                ))
            }
            None => return Err(DeviceError::bad_data(&self.label("state"), "not read")),
        };
        let current = |name: &str| -> Result<f64, DeviceError> {
            let a = self.num(name).unwrap_or(0.0);
            check::finite(&self.label(name), a)
        };
        let current_a = [
            current("current_l1_a")?,
            current("current_l2_a")?,
            current("current_l3_a")?,
        ];
        let power_w = check::power_within(
            &self.label("power_w"),
            self.required("power_w")?,
            cfg.rating_w,
        )?;
        Ok(ChargerReading {
            state,
            current_a,
            power_w,
            energy_wh: self.num("energy_wh"),
            applied_max_a: self.num("applied_max_a").or(applied).unwrap_or(0.0),
            remaining_validity_s: validity_s,
            // 0: the daemon takes the configured phases.
            phases: 0,
        })
    }

    fn battery(&self, cfg: &ProfiledConfig) -> Result<BatteryReading, DeviceError> {
        let soc_pct = check::percent(&self.label("soc_pct"), self.required("soc_pct")?)?;
        let soh_pct = self
            .num("soh_pct")
            .map(|v| check::percent(&self.label("soh_pct"), v))
            .transpose()?;
        // A profile that maps no BMS limit (the PCS enforces its BMS itself, the profile's
        // header says so): the configured PCS rating stands in for it.
        let limit = |name: &str| match self.profile.point(name) {
            Some(_) => self.num(name),
            None => cfg.rating_w,
        };
        let (max_c, max_d) = (limit("max_charge_w"), limit("max_discharge_w"));
        let bms_max = match (max_c, max_d) {
            (Some(c), Some(d)) => Some(c.max(d)),
            (c, d) => c.or(d),
        };
        let rating = cfg.rating_w.or(bms_max);
        let power_w = check::power_within(
            &self.label("power_w"),
            check::signed(self.required("power_w")?, cfg.invert),
            rating,
        )?;
        let state = self.operating("state").map(|(code, s)| match s {
            Some(StateName::Operating | StateName::Throttled) => BatteryState::Connected,
            Some(StateName::Standby) => BatteryState::Standby,
            Some(StateName::Fault) => BatteryState::Fault,
            Some(StateName::Off) => BatteryState::Disconnected,
            Some(StateName::Starting) => BatteryState::Initializing,
            None => BatteryState::Other(code),
        });
        Ok(BatteryReading {
            cells: None,
            cells_problem: None,
            soc_pct,
            soh_pct,
            soc_max_pct: None,
            soc_min_pct: None,
            capacity_wh: self.num("capacity_wh"),
            max_charge_w: max_c,
            max_discharge_w: max_d,
            max_charge_a: None,
            max_discharge_a: None,
            voltage_v: self.num("voltage_v"),
            current_a: self.num("current_a").map(|v| check::signed(v, cfg.invert)),
            power_w,
            cell_v_max: None,
            cell_v_min: None,
            state,
            events: 0,
            cycles: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_without_float_noise() {
        assert_eq!(Value::Number(230.100_000_000_000_02).to_string(), "230.1");
        assert_eq!(Value::Number(7123.0).to_string(), "7123");
        assert_eq!(Value::Number(-2500.0).to_string(), "-2500");
        assert_eq!(Value::Number(-0.000_000_1).to_string(), "0");
        assert_eq!(Value::Text("SUN2000".into()).to_string(), "\"SUN2000\"");
    }

    #[test]
    fn adjacent_spans_merge_into_one_request_and_gaps_split_them() {
        let mut spans = vec![(3, 10, 12), (3, 12, 14), (3, 20, 22), (4, 12, 14)];
        assert_eq!(plan(&mut spans), vec![(3, 10, 4), (3, 20, 2), (4, 12, 2)]);
    }

    #[test]
    fn a_run_never_exceeds_125_registers() {
        let mut spans: Vec<(u8, u32, u32)> = (0..100).map(|i| (3, i * 2, i * 2 + 2)).collect();
        let runs = plan(&mut spans);
        assert!(runs.iter().all(|(_, _, n)| *n <= 125));
        assert_eq!(runs.iter().map(|(_, _, n)| u32::from(*n)).sum::<u32>(), 200);
    }
}

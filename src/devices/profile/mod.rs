//! Device profiles as data: a TOML file per device model under `config/profiles/` declares the
//! kind, every point (function code, address, type, word order, scale, unit, sign, plausible
//! range, poll class), the setpoints (register, encoding, limits, refresh, safe value), state
//! maps and an identification probe. [`load`] parses and checks one; [`ProfileDevice`] drives
//! a device with it and produces the readings the built-in drivers produce.
//!
//! A new meter model is one new file; `stationd probe` confirms it against the device.

pub mod charger;
pub mod commission;
pub mod decode;
pub mod driver;
pub mod model;
pub mod schema;

pub use driver::{PointRead, ProfileDevice, ProfiledConfig, ProfiledReading, Value};
pub use model::{Point, Probe, ProbeCheck, Profile, ProfileKind, Scale, Setpoint};

use crate::config::Issues;
use std::path::{Path, PathBuf};

/// The file of profile `name` under `dir`.
pub fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.toml"))
}

/// Read, parse and check profile `name` from `dir`; every problem is named by file and key.
pub fn load(dir: &Path, name: &str) -> Result<Profile, Issues> {
    let mut issues = Issues::new();
    let path = path_of(dir, name);
    let file = path.display().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        issues.push(
            file,
            "profile names use lower-case letters, digits, '-' and '_' only",
        );
        return Err(issues);
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            issues.push(file, format!("cannot read the profile: {e}"));
            return Err(issues);
        }
    };
    parse(name, &file, &text)
}

/// Parse and check profile text (`file` names it in every issue).
pub fn parse(name: &str, file: &str, text: &str) -> Result<Profile, Issues> {
    match toml::from_str::<schema::RawProfile>(text) {
        Ok(raw) => model::check(name, file, &raw),
        Err(e) => {
            let mut issues = Issues::new();
            issues.push(file, e.to_string().trim().replace('\n', " "));
            Err(issues)
        }
    }
}

//! The `[mqtt]` config section: the raw serde layer and its validation into [`MqttConfig`].
//!
//! The broker's user name and password live in a separate file (`credentials_file`: the user
//! on the first line, the password on the second), so the station config can be shared without
//! secrets. TLS (`mqtts://`) needs a CA file; both files are read when the config is validated,
//! so `stationd check-config` reports a missing or unreadable file.

use crate::config::Issues;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `[mqtt]` as written. The section is absent unless MQTT is wanted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (default 8883).
    pub url: String,
    /// This station's id in the topic tree: letters, digits, '-' and '_'.
    pub station_id: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// File with the broker user on line 1 and the password on line 2.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://` only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Publish Home Assistant discovery (default true).
    #[serde(default = "default_true")]
    pub discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// Retained state is republished at least this often, s (default 60).
    #[serde(default = "default_state_interval")]
    pub state_interval_s: u64,
    /// MQTT keep-alive, s (default 15): a dead broker is noticed within about 1.5 times this.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// The station dashboard's URL as the fleet view should link it; empty = no link.
    #[serde(default)]
    pub dashboard_url: String,
}

fn default_prefix() -> String {
    "station".into()
}
fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
fn default_true() -> bool {
    true
}
fn default_state_interval() -> u64 {
    60
}
fn default_keep_alive() -> u64 {
    15
}

/// Broker login read from the credentials file. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The checked MQTT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// PEM bytes of the CA file; `Some` means TLS.
    pub tls_ca: Option<Vec<u8>>,
    pub credentials: Option<Credentials>,
    pub station_id: String,
    pub prefix: String,
    pub discovery: bool,
    pub discovery_prefix: String,
    pub state_interval: Duration,
    pub keep_alive: Duration,
    pub dashboard_url: Option<String>,
}

impl MqttConfig {
    /// A plain-TCP config for `host:port` with the defaults (tests, the fleet bench).
    pub fn plain(host: &str, port: u16, station_id: &str) -> MqttConfig {
        MqttConfig {
            host: host.to_string(),
            port,
            tls_ca: None,
            credentials: None,
            station_id: station_id.to_string(),
            prefix: default_prefix(),
            discovery: true,
            discovery_prefix: default_discovery_prefix(),
            state_interval: Duration::from_secs(default_state_interval()),
            keep_alive: Duration::from_secs(default_keep_alive()),
            dashboard_url: None,
        }
    }

    /// `<prefix>/<station_id>`, the root of this station's topics.
    pub fn root(&self) -> String {
        format!("{}/{}", self.prefix, self.station_id)
    }
}

/// A broker address parsed from `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parse a broker URL; the error says what is wrong with it.
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (got {url:?})"
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "expected only a host and port after the scheme, credentials go in credentials_file (got {url:?})"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, default_port),
            Some((h, p)) => (h, parse_port(p.trim_start_matches(':'))?),
            None => return Err(format!("unclosed '[' in {url:?}")),
        },
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (rest, default_port),
        },
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok(BrokerUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port must be within [1, 65535] (got {p:?})")),
        Ok(n) => Ok(n),
    }
}

/// A topic level or prefix: no MQTT wildcards, no empty levels, not starting with `$`.
fn topic_problem(s: &str, single_level: bool) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if single_level {
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Some(format!("use letters, digits, '-' and '_' only (got {s:?})"));
        }
        return None;
    }
    if s.contains(['+', '#']) || s.starts_with('$') || s.split('/').any(str::is_empty) {
        return Some(format!(
            "must be topic levels without wildcards, empty levels or a leading '$' (got {s:?})"
        ));
    }
    None
}

/// Read a credentials file: the user on line 1, the password on line 2.
pub fn read_credentials(path: &std::path::Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    let user = lines.next().unwrap_or("").trim().to_string();
    let password = lines
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string();
    if user.is_empty() {
        return Err(format!(
            "{}: expected the user on line 1 and the password on line 2",
            path.display()
        ));
    }
    Ok(Credentials { user, password })
}

impl RawMqtt {
    /// The CA file's bytes for a TLS url; pushes a problem when it is missing, misplaced or
    /// unreadable.
    fn read_ca(&self, tls: bool, issues: &mut Issues) -> Option<Vec<u8>> {
        match (&self.ca_file, tls) {
            (None, true) => {
                issues.push("mqtt.ca_file", "required with an mqtts:// url");
                None
            }
            (Some(_), false) => {
                issues.push("mqtt.ca_file", "applies only to an mqtts:// url");
                None
            }
            (Some(p), true) => std::fs::read(p)
                .map_err(|e| {
                    issues.push("mqtt.ca_file", format!("cannot read {}: {e}", p.display()))
                })
                .ok(),
            (None, false) => None,
        }
    }

    /// Validate into [`MqttConfig`], pushing every problem into `issues` under `mqtt.*`.
    pub fn validate(&self, issues: &mut Issues) -> Option<MqttConfig> {
        let before = issues.len();
        let broker = match parse_broker_url(&self.url) {
            Ok(b) => Some(b),
            Err(e) => {
                issues.push("mqtt.url", e);
                None
            }
        };
        if let Some(p) = topic_problem(&self.station_id, true) {
            issues.push("mqtt.station_id", p);
        }
        if let Some(p) = topic_problem(&self.prefix, false) {
            issues.push("mqtt.prefix", p);
        }
        if let Some(p) = topic_problem(&self.discovery_prefix, false) {
            issues.push("mqtt.discovery_prefix", p);
        }
        if !(1..=60).contains(&self.state_interval_s) {
            issues.push(
                "mqtt.state_interval_s",
                format!("must be within [1, 60] (got {})", self.state_interval_s),
            );
        }
        if !(2..=600).contains(&self.keep_alive_s) {
            issues.push(
                "mqtt.keep_alive_s",
                format!("must be within [2, 600] (got {})", self.keep_alive_s),
            );
        }
        let credentials = self.credentials_file.as_ref().and_then(|p| {
            read_credentials(p)
                .map_err(|e| issues.push("mqtt.credentials_file", e))
                .ok()
        });
        let tls_ca = broker.as_ref().and_then(|b| self.read_ca(b.tls, issues));
        let broker = broker?;
        if issues.len() != before {
            return None;
        }
        Some(MqttConfig {
            host: broker.host,
            port: broker.port,
            tls_ca,
            credentials,
            station_id: self.station_id.clone(),
            prefix: self.prefix.clone(),
            discovery: self.discovery,
            discovery_prefix: self.discovery_prefix.clone(),
            state_interval: Duration::from_secs(self.state_interval_s),
            keep_alive: Duration::from_secs(self.keep_alive_s),
            dashboard_url: Some(self.dashboard_url.clone()).filter(|u| !u.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_take_the_default_port_of_their_scheme() {
        let b = parse_broker_url("mqtt://broker.example").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 1883, false)
        );
        let b = parse_broker_url("mqtts://10.0.0.5:9883").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("10.0.0.5", 9883, true));
        let b = parse_broker_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
    }

    #[test]
    fn bad_broker_urls_say_what_is_wrong() {
        assert!(parse_broker_url("tcp://x").unwrap_err().contains("mqtt://"));
        assert!(parse_broker_url("mqtt://x:0").unwrap_err().contains("port"));
        assert!(parse_broker_url("mqtt://u:p@x")
            .unwrap_err()
            .contains("credentials_file"));
        assert!(parse_broker_url("mqtt://").unwrap_err().contains("no host"));
    }

    #[test]
    fn credentials_debug_output_hides_the_password() {
        let c = Credentials {
            user: "station-7".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("station-7") && !shown.contains("s3cret"));
    }
}

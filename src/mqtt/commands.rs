//! Commands under `<prefix>/<station_id>/.../set` (pure parsing). Every command, known or not,
//! is answered on the same path with `/result` in place of `/set`.

use crate::dispatch::ChargeMode;
use serde_json::json;

/// A command the daemon carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetMode { charger: String, mode: ChargeMode },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("unknown command {path:?}: the only command is chargers/<charger>/mode/set")]
    Unknown { path: String },
    #[error("no charger {charger:?} at this station (chargers: {known})")]
    NoCharger { charger: String, known: String },
    #[error("mode must be fast, solar or min_solar (got {got:?})")]
    BadMode { got: String },
    #[error("the control loop did not take the command: {why}")]
    NotTaken { why: String },
}

/// The MQTT topic filters that cover every command path of the station rooted at `root`.
pub fn filters(root: &str) -> Vec<String> {
    ["+/set", "+/+/set", "+/+/+/set", "+/+/+/+/set"]
        .iter()
        .map(|f| format!("{root}/{f}"))
        .collect()
}

/// The topic a command on `topic` is answered on.
pub fn result_topic(topic: &str) -> String {
    match topic.strip_suffix("/set") {
        Some(base) => format!("{base}/result"),
        None => format!("{topic}/result"),
    }
}

fn parse_mode(payload: &[u8]) -> Result<ChargeMode, Refused> {
    let text = String::from_utf8_lossy(payload);
    let word = text.trim().trim_matches('"');
    match word {
        "fast" => Ok(ChargeMode::Fast),
        "solar" => Ok(ChargeMode::Solar),
        "min_solar" => Ok(ChargeMode::MinSolar),
        _ => Err(Refused::BadMode {
            got: text.chars().take(64).collect(),
        }),
    }
}

/// Parse a command published on `topic` (under `root`) for a station with `chargers`.
pub fn parse(
    root: &str,
    topic: &str,
    payload: &[u8],
    chargers: &[&str],
) -> Result<Command, Refused> {
    let path = topic
        .strip_prefix(root)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_suffix("/set"))
        .unwrap_or(topic);
    let levels: Vec<&str> = path.split('/').collect();
    match levels.as_slice() {
        ["chargers", charger, "mode"] => {
            if !chargers.contains(charger) {
                return Err(Refused::NoCharger {
                    charger: (*charger).to_string(),
                    known: chargers.join(", "),
                });
            }
            Ok(Command::SetMode {
                charger: (*charger).to_string(),
                mode: parse_mode(payload)?,
            })
        }
        _ => Err(Refused::Unknown {
            path: format!("{path}/set"),
        }),
    }
}

/// The JSON answer to a command.
pub fn result_payload(topic: &str, payload: &[u8], outcome: &Result<Command, Refused>) -> String {
    let value: String = String::from_utf8_lossy(payload).chars().take(64).collect();
    let body = match outcome {
        Ok(Command::SetMode { charger, mode }) => json!({
            "accepted": true,
            "command": topic,
            "value": value,
            "charger": charger,
            "mode": crate::daemon::publish::mode_name(*mode),
        }),
        Err(e) => json!({
            "accepted": false,
            "command": topic,
            "value": value,
            "reason": e.to_string(),
        }),
    };
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "station/dealer-7";
    const CHARGERS: &[&str] = &["charger-1", "charger-2"];

    #[test]
    fn a_mode_command_names_its_charger_and_mode() {
        let c = parse(
            ROOT,
            "station/dealer-7/chargers/charger-2/mode/set",
            b"min_solar",
            CHARGERS,
        );
        assert_eq!(
            c,
            Ok(Command::SetMode {
                charger: "charger-2".into(),
                mode: ChargeMode::MinSolar
            })
        );
    }

    #[test]
    fn bad_commands_are_refused_with_what_is_wrong() {
        let e = parse(
            ROOT,
            "station/dealer-7/chargers/charger-1/mode/set",
            b"turbo",
            CHARGERS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"turbo\""), "{e}");
        let e = parse(
            ROOT,
            "station/dealer-7/chargers/charger-9/mode/set",
            b"fast",
            CHARGERS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("charger-9") && e.to_string().contains("charger-1"));
        let e = parse(
            ROOT,
            "station/dealer-7/battery/power/set",
            b"5000",
            CHARGERS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("battery/power/set"), "{e}");
    }

    #[test]
    fn results_go_to_the_command_path_with_result_in_place_of_set() {
        assert_eq!(
            result_topic("station/x/chargers/c/mode/set"),
            "station/x/chargers/c/mode/result"
        );
        assert_eq!(filters(ROOT)[0], "station/dealer-7/+/set");
    }
}

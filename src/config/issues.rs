//! Config validation errors, collected all at once and named by their dotted key.
//!
//! Every config section validates its raw serde struct into a checked type and pushes one
//! [`Issue`] per problem into an [`Issues`] collector, so an operator sees every mistake in one
//! run: `policy.grid.import_limit_kw: must be > 0 (got -5)`.

use std::fmt;

/// One problem with one config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `policy.grid.import_limit_kw` or `devices.charger-3.port`.
    pub key: String,
    /// What is wrong, e.g. `must be > 0 (got -5)`.
    pub problem: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// Collector of issues; a section pushes into it and keeps going.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Issue {
            key: key.into(),
            problem: problem.into(),
        });
    }

    /// Push `key: must be > 0 (got v)` unless `v > 0` and finite.
    pub fn positive(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.push(key, format!("must be > 0 (got {v})"));
        }
    }

    /// Push `key: must be >= 0 (got v)` unless `v >= 0` and finite.
    pub fn non_negative(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.push(key, format!("must be >= 0 (got {v})"));
        }
    }

    /// Push `key: must be within [lo, hi] (got v)` unless `lo <= v <= hi`.
    pub fn within(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && v >= lo && v <= hi) {
            self.push(key, format!("must be within [{lo}, {hi}] (got {v})"));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Issue> {
        self.0.iter()
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Issues {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_render_one_line_per_key_in_order() {
        let mut issues = Issues::new();
        issues.positive("policy.grid.import_limit_kw", -5.0);
        issues.within("policy.battery.soc_min_pct", 120.0, 0.0, 100.0);
        issues.non_negative("policy.grid.export_limit_kw", 0.0);
        assert_eq!(issues.len(), 2);
        assert_eq!(
            issues.to_string(),
            "policy.grid.import_limit_kw: must be > 0 (got -5)\n\
             policy.battery.soc_min_pct: must be within [0, 100] (got 120)"
        );
    }

    #[test]
    fn nan_is_never_accepted_as_a_number() {
        let mut issues = Issues::new();
        issues.non_negative("x", f64::NAN);
        issues.positive("y", f64::INFINITY);
        assert_eq!(issues.len(), 2);
    }
}

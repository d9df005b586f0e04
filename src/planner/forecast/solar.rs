//! Solar geometry and a clear-sky model for a tilted PV array.
//!
//! Geometry: the sun's declination and the equation of time from the day angle (Spencer's
//! Fourier series, 1971), the hour angle from UTC and the site's longitude, then the zenith and
//! the azimuth (from north, clockwise). Irradiance under a clear sky: the direct normal beam
//! from the Meinel model (`1353 x 0.7^(AM^0.678)` W/m², air mass by Kasten and Young, 1989),
//! diffuse horizontal as 10 % of the beam, the plane of array by the isotropic sky model with
//! a ground albedo of 0.2. The array gives `kWp x POA / 1000 x performance ratio`, capped at the
//! inverter's AC rating.
//!
//! This is a shape, not an absolute: the PV forecaster scales it by the ratio of measured to
//! clear-sky energy, so haze, soiling and the model's own bias are learnt from the plant.

use chrono::{DateTime, Datelike, Timelike, Utc};
use std::f64::consts::PI;

/// The PV array and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Latitude, degrees north.
    pub lat_deg: f64,
    /// Longitude, degrees east.
    pub lon_deg: f64,
    /// Tilt of the modules from horizontal, degrees (0 = flat).
    pub tilt_deg: f64,
    /// Direction the modules face, degrees from north clockwise (180 = south).
    pub azimuth_deg: f64,
    /// DC peak power, kW.
    pub kwp: f64,
    /// Inverter AC rating, kW (the array's output is capped here).
    pub ac_kw: f64,
    /// DC-to-AC performance ratio under a clear sky (losses, temperature, inverter), 0..1.
    pub performance_ratio: f64,
}

/// Where the sun is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SunPosition {
    /// Cosine of the zenith angle (sine of the elevation); <= 0 below the horizon.
    pub cos_zenith: f64,
    /// Azimuth, radians from north clockwise.
    pub azimuth_rad: f64,
}

/// The sun's position at `t` seen from (`lat_deg`, `lon_deg`).
pub fn sun_position(lat_deg: f64, lon_deg: f64, t: DateTime<Utc>) -> SunPosition {
    let doy = f64::from(t.ordinal());
    let utc_h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
    let g = 2.0 * PI / 365.0 * (doy - 1.0 + (utc_h - 12.0) / 24.0);
    let decl = 0.006918 - 0.399912 * g.cos() + 0.070257 * g.sin() - 0.006758 * (2.0 * g).cos()
        + 0.000907 * (2.0 * g).sin()
        - 0.002697 * (3.0 * g).cos()
        + 0.00148 * (3.0 * g).sin();
    let eot_min = 229.18
        * (0.000075 + 0.001868 * g.cos()
            - 0.032077 * g.sin()
            - 0.014615 * (2.0 * g).cos()
            - 0.040849 * (2.0 * g).sin());
    let solar_h = utc_h + lon_deg / 15.0 + eot_min / 60.0;
    let hour_angle = (15.0 * (solar_h - 12.0)).to_radians();
    let lat = lat_deg.to_radians();
    let cos_zenith = lat.sin() * decl.sin() + lat.cos() * decl.cos() * hour_angle.cos();
    // Azimuth from north, clockwise: atan2 of the east and north components of the sun vector.
    let east = -decl.cos() * hour_angle.sin();
    let north = decl.sin() * lat.cos() - decl.cos() * lat.sin() * hour_angle.cos();
    let azimuth_rad = east.atan2(north).rem_euclid(2.0 * PI);
    SunPosition {
        cos_zenith,
        azimuth_rad,
    }
}

/// Clear-sky plane-of-array irradiance on modules tilted `tilt_deg` facing `azimuth_deg`, W/m².
pub fn clear_sky_poa_w_m2(sun: SunPosition, tilt_deg: f64, azimuth_deg: f64) -> f64 {
    if sun.cos_zenith <= 0.0 {
        return 0.0;
    }
    let zenith_deg = sun.cos_zenith.clamp(-1.0, 1.0).acos().to_degrees();
    let air_mass = 1.0 / (sun.cos_zenith + 0.50572 * (96.07995 - zenith_deg).powf(-1.6364));
    let dni = 1353.0 * 0.7_f64.powf(air_mass.powf(0.678));
    let dhi = 0.1 * dni;
    let ghi = dni * sun.cos_zenith + dhi;
    let tilt = tilt_deg.to_radians();
    let sin_zenith = (1.0 - sun.cos_zenith * sun.cos_zenith).max(0.0).sqrt();
    let cos_incidence = sun.cos_zenith * tilt.cos()
        + sin_zenith * tilt.sin() * (sun.azimuth_rad - azimuth_deg.to_radians()).cos();
    let beam = dni * cos_incidence.max(0.0);
    let sky = dhi * (1.0 + tilt.cos()) / 2.0;
    let ground = ghi * 0.2 * (1.0 - tilt.cos()) / 2.0;
    beam + sky + ground
}

/// Clear-sky AC power of the array at `t`, W.
pub fn clear_sky_w(site: &Site, t: DateTime<Utc>) -> f64 {
    let sun = sun_position(site.lat_deg, site.lon_deg, t);
    let poa = clear_sky_poa_w_m2(sun, site.tilt_deg, site.azimuth_deg);
    (site.kwp * poa * site.performance_ratio).min(site.ac_kw * 1000.0)
}

/// Mean clear-sky AC power over the 15 minutes from `start`, W (five samples, one per 3 min).
pub fn clear_sky_quarter_w(site: &Site, start: DateTime<Utc>) -> f64 {
    (0..5)
        .map(|k| clear_sky_w(site, start + chrono::Duration::seconds(90 + 180 * k)))
        .sum::<f64>()
        / 5.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn shanghai(tilt: f64, az: f64) -> Site {
        Site {
            lat_deg: 31.2,
            lon_deg: 121.5,
            tilt_deg: tilt,
            azimuth_deg: az,
            kwp: 150.0,
            ac_kw: 135.0,
            performance_ratio: 0.8,
        }
    }

    #[test]
    fn the_sun_culminates_in_the_south_near_local_solar_noon_in_shanghai() {
        // Solar noon at 121.5 E is about 03:54 UTC; in mid-July the equation of time is -6 min.
        let noon = Utc.with_ymd_and_hms(2026, 7, 15, 4, 0, 0).unwrap();
        let s = sun_position(31.2, 121.5, noon);
        // Declination about +21.5 degrees: elevation about 90 - 31.2 + 21.5 = 80.3 degrees.
        let elev = s.cos_zenith.asin().to_degrees();
        assert!((elev - 80.3).abs() < 1.0, "elevation {elev}");
        let morning = sun_position(31.2, 121.5, noon - chrono::Duration::hours(4));
        assert!((morning.azimuth_rad.to_degrees() - 90.0).abs() < 30.0);
        let midnight = sun_position(31.2, 121.5, noon + chrono::Duration::hours(12));
        assert!(midnight.cos_zenith < 0.0);
    }

    #[test]
    fn a_south_facing_tilt_gains_in_winter_and_an_east_array_peaks_in_the_morning() {
        let winter_noon = Utc.with_ymd_and_hms(2026, 1, 15, 4, 0, 0).unwrap();
        let flat = clear_sky_w(&shanghai(0.0, 180.0), winter_noon);
        let tilted = clear_sky_w(&shanghai(30.0, 180.0), winter_noon);
        assert!(tilted > 1.2 * flat, "flat {flat} tilted {tilted}");
        let morning = Utc.with_ymd_and_hms(2026, 7, 15, 0, 30, 0).unwrap();
        let afternoon = Utc.with_ymd_and_hms(2026, 7, 15, 7, 30, 0).unwrap();
        let east = shanghai(30.0, 90.0);
        assert!(clear_sky_w(&east, morning) > 1.5 * clear_sky_w(&east, afternoon));
    }

    #[test]
    fn clear_sky_power_is_capped_at_the_inverter_rating_and_zero_at_night() {
        let mut site = shanghai(20.0, 180.0);
        site.performance_ratio = 1.0;
        let noon = Utc.with_ymd_and_hms(2026, 5, 15, 4, 0, 0).unwrap();
        assert!((clear_sky_w(&site, noon) - 135_000.0).abs() < 1e-6);
        let night = Utc.with_ymd_and_hms(2026, 5, 15, 16, 0, 0).unwrap();
        assert_eq!(clear_sky_quarter_w(&site, night), 0.0);
    }
}

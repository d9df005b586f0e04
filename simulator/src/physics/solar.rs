//! Solar geometry and a simple clear-sky irradiance model.
//!
//! Declination (Cooper), equation of time (Spencer's short form), hour angle from apparent
//! solar time, and the Haurwitz clear-sky global horizontal irradiance
//! `GHI = 1098 cos(z) exp(-0.057 / cos(z))` W/m².

use std::f64::consts::PI;

/// Sine of the sun's elevation angle.
///
/// `day_of_year` is 1-based, `utc_hours` the UTC time of day in hours (may be outside 0..24 after
/// adding the longitude, which is harmless).
pub fn sin_elevation(lat_deg: f64, lon_deg: f64, day_of_year: u32, utc_hours: f64) -> f64 {
    let n = f64::from(day_of_year);
    let decl = (23.45_f64).to_radians() * (2.0 * PI * (284.0 + n) / 365.0).sin();
    let b = 2.0 * PI * (n - 81.0) / 365.0;
    let eot_min = 9.87 * (2.0 * b).sin() - 7.53 * b.cos() - 1.5 * b.sin();
    let solar_hours = utc_hours + lon_deg / 15.0 + eot_min / 60.0;
    let hour_angle = (15.0 * (solar_hours - 12.0)).to_radians();
    let lat = lat_deg.to_radians();
    lat.sin() * decl.sin() + lat.cos() * decl.cos() * hour_angle.cos()
}

/// Clear-sky global horizontal irradiance, W/m² (0 when the sun is below the horizon).
pub fn clear_sky_ghi_w_m2(sin_elev: f64) -> f64 {
    if sin_elev <= 0.01 {
        0.0
    } else {
        1098.0 * sin_elev * (-0.057 / sin_elev).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summer_noon_in_shanghai_is_high_and_midnight_is_dark() {
        // Local solar noon in Shanghai is about 03:54 UTC.
        let noon = sin_elevation(31.2, 121.5, 196, 3.9);
        assert!(noon > 0.95, "{noon}");
        let midnight = sin_elevation(31.2, 121.5, 196, 16.0);
        assert!(midnight < 0.0);
        assert_eq!(clear_sky_ghi_w_m2(midnight), 0.0);
        let ghi = clear_sky_ghi_w_m2(noon);
        assert!(ghi > 950.0 && ghi < 1100.0, "{ghi}");
    }

    #[test]
    fn winter_noon_is_lower_than_summer_noon() {
        let summer = sin_elevation(31.2, 121.5, 172, 3.9);
        let winter = sin_elevation(31.2, 121.5, 355, 3.9);
        assert!(winter < summer - 0.2);
    }
}

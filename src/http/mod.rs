//! The daemon's HTTP surface: the API handlers ([`api`]) and the dashboard's files ([`assets`]).

pub mod api;
pub mod assets;
pub mod battery_health;
pub mod bookings;
pub mod session;

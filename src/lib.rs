//! Rust engine behind the `metrics` Django app: families, label sets, stores and encoders.

pub mod cell;
pub mod encode;
pub mod exemplar;
pub mod family;
pub mod names;
pub mod registry;
pub mod store;

#[cfg(feature = "python")]
pub mod py;

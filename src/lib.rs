//! Rust engine behind the `metrics` Django app: families, label sets, stores and encoders.
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cell;
pub mod encode;
pub mod exemplar;
pub mod family;
pub mod names;
pub mod registry;
pub mod store;

#[cfg(feature = "python")]
pub mod py;

//! Differential privacy for Veil's `dp` mode.
//!
//! - [`sampler`]: exact discrete Laplace and discrete Gaussian noise (Canonne, Kamath, Steinke
//!   2020), drawn with integer arithmetic only from the operating system's CSPRNG, so no
//!   floating-point artefact can reveal the true value (Mironov 2012).
//! - [`noise`]: calibrating that noise to a sensitivity and an ε (Laplace) or ρ (Gaussian), on
//!   integer counts and on sums put on a power-of-two grid first, with the 95% interval of
//!   every noisy value.
//! - [`accounting`]: what many answers guarantee together, pure ε and ρ charges composed.

pub mod accounting;
pub mod noise;
pub mod sampler;

pub use accounting::{Guarantee, Loss};
pub use noise::{Mechanism, Noise, Noisy};
pub use sampler::{Rational, Sampler};

/// What can go wrong while sampling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system's random source failed; nothing may be released.
    #[error("the system random source failed")]
    Random,
    /// A parameter was out of range (a bug in the caller: epsilon and bounds are validated first).
    #[error("invalid noise parameter: {0}")]
    Parameter(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

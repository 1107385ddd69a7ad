//! Errors of loading a policy.

use std::path::PathBuf;

use veil_common::ErrorKind;

/// A policy that could not be loaded. The policy in force, if any, stays in force.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The model is not a valid casbin model.
    #[error("{file}: the model is invalid: {message}")]
    Model {
        /// Which file.
        file: String,
        /// What casbin said.
        message: String,
    },
    /// A policy line is malformed.
    #[error("{file} line {line}: {message}")]
    Line {
        /// Which file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// casbin refused the assembled policy.
    #[error("the policy could not be loaded: {0}")]
    Casbin(String),
}

impl Error {
    /// The coarse class of this error: a bad file is the operator's input.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { .. } | Error::Casbin(_) => ErrorKind::Internal,
            Error::Model { .. } | Error::Line { .. } => ErrorKind::Unprocessable,
        }
    }

    /// A stable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Read { .. } | Error::Casbin(_) => "internal",
            Error::Model { .. } => "policy_model_invalid",
            Error::Line { .. } => "policy_line_invalid",
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

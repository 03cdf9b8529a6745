//! Application errors, each with a stable code and an HTTP-shaped kind.

/// What kind of failure, which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed or invalid input: 400.
    Invalid,
    /// No such thing: 404.
    NotFound,
    /// Already exists, or changed concurrently: 409.
    Conflict,
    /// A business rule refused it: 422.
    Rule,
}

/// A domain rule's refusal, with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    /// Decides the status.
    pub kind: Kind,
    /// Stable code, e.g. `not_enough_seats`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl DomainError {
    /// A domain error.
    pub fn new(kind: Kind, code: &'static str, message: String) -> Self {
        Self {
            kind,
            code,
            message,
        }
    }
}

/// Everything the application can answer instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// A domain rule or validation refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Malformed input.
    #[error("{0}")]
    Invalid(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// A concurrent change won.
    #[error("{0}")]
    Conflict(String),
    /// The read side has not caught up with the position asked for.
    #[error("{0}")]
    Stale(String),
    /// A backing service is down.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

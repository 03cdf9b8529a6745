//! Bearer tokens and roles.
//!
//! Tokens come from configuration (`AIRLINE_TOKENS="token:role,token:role"`),
//! never from code. `admin` may run every command; `agent` may create, read
//! and cancel bookings; `reader` may read bookings. Flight queries are open.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read bookings.
    Reader,
    /// May create, read and cancel bookings.
    Agent,
    /// May run every command.
    Admin,
}

impl Role {
    /// Roles that may run flight commands.
    pub const FLIGHT_COMMANDS: &'static [Role] = &[Role::Admin];
    /// Roles that may create and cancel bookings.
    pub const BOOKING_COMMANDS: &'static [Role] = &[Role::Agent, Role::Admin];
    /// Roles that may read bookings.
    pub const BOOKING_READS: &'static [Role] = &[Role::Reader, Role::Agent, Role::Admin];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokensError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "reader" => Ok(Role::Reader),
            "agent" => Ok(Role::Agent),
            "admin" => Ok(Role::Admin),
            other => Err(TokensError::UnknownRole(other.to_owned())),
        }
    }
}

/// Why a token list did not parse. Never repeats a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    /// An entry is not `token:role`.
    #[error("entry {0} of the token list is not \"token:role\"")]
    Malformed(usize),
    /// A role other than reader, agent, admin.
    #[error("unknown role {0:?} (expected reader, agent or admin)")]
    UnknownRole(String),
    /// A token with whitespace or control characters.
    #[error("entry {0} of the token list has whitespace or control characters in its token")]
    BadToken(usize),
    /// The same token twice.
    #[error("entry {0} of the token list repeats an earlier token")]
    Duplicate(usize),
}

/// The accepted bearer tokens and their roles. Its `Debug` hides the tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// No tokens: every command is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `"token:role,token:role"` (spaces around entries are ignored).
    pub fn parse(spec: &str) -> Result<Self, TokensError> {
        let mut tokens = Tokens::new();
        for (index, entry) in spec.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let number = index + 1;
            let (token, role) = entry
                .rsplit_once(':')
                .ok_or(TokensError::Malformed(number))?;
            let role: Role = role.parse()?;
            if token.is_empty() {
                return Err(TokensError::Malformed(number));
            }
            tokens.insert(token, role).map_err(|e| match e {
                TokensError::Duplicate(_) => TokensError::Duplicate(number),
                _ => TokensError::BadToken(number),
            })?;
        }
        Ok(tokens)
    }

    /// Adds a token.
    pub fn insert(&mut self, token: impl Into<String>, role: Role) -> Result<(), TokensError> {
        let token = token.into();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokensError::BadToken(self.entries.len() + 1));
        }
        if self.role(&token).is_some() {
            return Err(TokensError::Duplicate(self.entries.len() + 1));
        }
        self.entries.push((token, role));
        Ok(())
    }

    /// With one more token (for building in code and tests).
    pub fn with(mut self, token: impl Into<String>, role: Role) -> Result<Self, TokensError> {
        self.insert(token, role)?;
        Ok(self)
    }

    /// The role of a token, comparing every entry in constant time.
    pub fn role(&self, token: &str) -> Option<Role> {
        let mut found = None;
        for (known, role) in &self.entries {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any (`Authorization: Bearer <token>`).
pub(crate) fn bearer(parts_headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = parts_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who is asking: the role of the request's bearer token, if it has a known
/// one. Extracting never fails; [`Caller::require`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    role: Option<Role>,
    presented: bool,
}

impl Caller {
    /// The caller's role.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The caller's role if it is one of `allowed`: 401 without a known
    /// token, 403 with a role not allowed.
    pub fn require(&self, allowed: &[Role]) -> Result<Role, ApiError> {
        match self.role {
            None if self.presented => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown bearer token",
            )),
            None => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs a bearer token (Authorization: Bearer <token>)",
            )),
            Some(role) if allowed.contains(&role) => Ok(role),
            Some(role) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "role {role} may not do this; allowed: {}",
                    allowed
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<AppState<S>> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts.headers.contains_key(header::AUTHORIZATION);
        let role = bearer(&parts.headers).and_then(|token| state.inner.tokens.role(token));
        Ok(Caller { role, presented })
    }
}

/// Which roles an [`Authorized`] extractor lets through.
pub trait Policy: Send + Sync + 'static {
    /// The roles allowed.
    const ROLES: &'static [Role];
}

/// Flight commands: admin.
#[derive(Debug)]
pub enum FlightCommands {}
impl Policy for FlightCommands {
    const ROLES: &'static [Role] = Role::FLIGHT_COMMANDS;
}

/// Booking commands: agent or admin.
#[derive(Debug)]
pub enum BookingCommands {}
impl Policy for BookingCommands {
    const ROLES: &'static [Role] = Role::BOOKING_COMMANDS;
}

/// Reading bookings: any role.
#[derive(Debug)]
pub enum BookingReads {}
impl Policy for BookingReads {
    const ROLES: &'static [Role] = Role::BOOKING_READS;
}

/// A caller whose role the policy `P` allows; rejects with 401 or 403
/// before the body is read.
#[derive(Debug)]
pub struct Authorized<P>(pub Role, pub PhantomData<P>);

impl<S: Send + Sync, P: Policy> FromRequestParts<AppState<S>> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(caller) = Caller::from_request_parts(parts, state).await;
        caller
            .require(P::ROLES)
            .map(|role| Authorized(role, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_lists() {
        let tokens = Tokens::parse("a1:admin, b2:agent ,c3:reader,").unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.role("a1"), Some(Role::Admin));
        assert_eq!(tokens.role("b2"), Some(Role::Agent));
        assert_eq!(tokens.role("c3"), Some(Role::Reader));
        assert_eq!(tokens.role("c"), None);
        assert_eq!(Tokens::parse("x").unwrap_err(), TokensError::Malformed(1));
        assert!(matches!(
            Tokens::parse("x:root"),
            Err(TokensError::UnknownRole(_))
        ));
        assert_eq!(
            Tokens::parse("x:admin,x:agent").unwrap_err(),
            TokensError::Duplicate(2)
        );
        assert_eq!(
            Tokens::parse(":admin").unwrap_err(),
            TokensError::Malformed(1)
        );
        assert!(!format!("{tokens:?}").contains("a1"));
    }
}

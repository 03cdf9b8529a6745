//! What extension points return when they fail: any error, its sources kept.

use std::error::Error;

/// Any error with its chain of sources: what a projection, a fold or a
/// dispatcher returns when it fails, so that whoever reports it (a dead
/// letter, a log line, `/health`) can say why, cause by cause.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// An error's message, then each cause that the message does not already
/// say (many errors repeat their source in their own message), joined by
/// `": "`: the one line a dead letter or a log records.
///
/// ```
/// # use annals::error::{BoxError, report};
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot apply event 7")]
/// struct Apply(#[source] std::num::ParseIntError);
///
/// let cause = "x".parse::<u32>().unwrap_err();
/// assert_eq!(report(&Apply(cause)), "cannot apply event 7: invalid digit found in string");
/// ```
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
    text
}

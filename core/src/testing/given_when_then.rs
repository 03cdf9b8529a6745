//! `given(events).when(command).then(events)` for aggregates.

use std::fmt::Debug;

use crate::aggregate::{Aggregate, Handle};

/// Starts a scenario: the aggregate's history.
///
/// ```
/// # use annals::{Aggregate, DomainEvent, Handle};
/// # use annals::testing::given;
/// #[derive(Debug, Clone, PartialEq, DomainEvent)]
/// enum DoorEvent { Opened, Closed }
///
/// #[derive(Debug, Default, annals::AggregateType)]
/// #[aggregate(name = "door")]
/// struct Door { open: bool }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// #[error("already open")]
/// struct AlreadyOpen;
///
/// impl Aggregate for Door {
///     type Event = DoorEvent;
///     type Error = AlreadyOpen;
///     fn apply(&mut self, event: &DoorEvent) {
///         self.open = matches!(event, DoorEvent::Opened);
///     }
/// }
///
/// struct Open;
/// impl Handle<Open> for Door {
///     fn handle(&self, _: &Open) -> Result<Vec<DoorEvent>, AlreadyOpen> {
///         if self.open { Err(AlreadyOpen) } else { Ok(vec![DoorEvent::Opened]) }
///     }
/// }
///
/// given::<Door>([]).when(Open).then([DoorEvent::Opened]);
/// given::<Door>([DoorEvent::Opened]).when(Open).then_error(AlreadyOpen);
/// given::<Door>([DoorEvent::Opened, DoorEvent::Closed]).when(Open).then([DoorEvent::Opened]);
/// ```
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in history {
        state.apply(&event);
    }
    Given { state }
}

/// An aggregate with its history applied, ready for a command.
#[derive(Debug)]
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides the command against the history.
    pub fn when<C>(self, command: C) -> When<A>
    where
        A: Handle<C>,
    {
        let outcome = self.state.handle(&command);
        When {
            state: self.state,
            outcome,
        }
    }

    /// The state folded from the history, for assertions on `apply`.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The outcome of a command, to assert on.
#[derive(Debug)]
pub struct When<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq + Debug,
    A::Error: Debug,
{
    /// Asserts the command emitted exactly these events, in order, and
    /// returns the state with them applied.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "the command emitted other events");
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => {
                panic!("expected events {expected:?}, but the command was rejected: {error:?}")
            }
        }
    }

    /// Asserts the command was rejected with this error.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(events) => panic!("expected error {expected:?}, but the command emitted {events:?}"),
            Err(error) => assert_eq!(error, expected, "the command failed with another error"),
        }
    }

    /// The raw outcome, for assertions the methods above do not cover.
    pub fn outcome(self) -> Result<Vec<A::Event>, A::Error> {
        self.outcome
    }
}

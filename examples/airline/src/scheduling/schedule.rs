//! Scheduling a flight: a decision over two rules, not one aggregate's
//! stream. A flight id is scheduled once (the Flight aggregate's own rule),
//! and a flight number flies at most once per departure day, a rule that
//! spans every flight's stream: no aggregate can hold it, a dynamic
//! consistency boundary can ([`annals::decision`]).

use annals::decision::{Decision, DecisionState};
use annals::{Aggregate, AggregateType, Handle, Query, QueryItem};
use chrono::NaiveDate;

use super::commands::ScheduleFlight;
use super::events::{FlightEvent, number_day_tag};
use super::flight::{Flight, FlightError};
use crate::values::FlightNumber;

/// Whether a flight id is already scheduled: its `FlightScheduled` event.
#[derive(Debug)]
pub struct FlightScheduledOnce {
    flight: Flight,
    query: Query,
}

impl DecisionState for FlightScheduledOnce {
    type Event = FlightEvent;

    fn query(&self) -> Query {
        self.query.clone()
    }

    fn apply(&mut self, event: &FlightEvent) {
        self.flight.apply(event);
    }
}

/// Whether a flight number already flies on a day: the `FlightScheduled`
/// events tagged with it.
#[derive(Debug)]
pub struct NumberOnDay {
    number: FlightNumber,
    day: NaiveDate,
    taken: bool,
}

impl DecisionState for NumberOnDay {
    type Event = FlightEvent;

    fn query(&self) -> Query {
        Query::new().or(QueryItem::types([FlightEvent::FLIGHT_SCHEDULED])
            .and_tagged([number_day_tag(&self.number, self.day)]))
    }

    fn apply(&mut self, _: &FlightEvent) {
        self.taken = true;
    }
}

impl Decision for ScheduleFlight {
    type State = (FlightScheduledOnce, NumberOnDay);
    type Event = FlightEvent;
    type Error = FlightError;

    fn state(&self) -> Self::State {
        let this_flight = QueryItem::types([FlightEvent::FLIGHT_SCHEDULED])
            .and_tagged([format!("flight:{}", self.flight_id)]);
        (
            FlightScheduledOnce {
                flight: Flight::default(),
                query: Query::new().or(this_flight),
            },
            NumberOnDay {
                number: self.flight_number.clone(),
                day: self.departure.date_naive(),
                taken: false,
            },
        )
    }

    fn stream(&self) -> String {
        Flight::stream_id(&self.flight_id)
    }

    fn decide(&self, (once, number): &Self::State) -> Result<Vec<FlightEvent>, FlightError> {
        // The aggregate's own rules first (an id scheduled twice, bad times,
        // seats or price), then the rule across flights.
        let events = once.flight.handle(self)?;
        if number.taken {
            return Err(FlightError::NumberTaken {
                number: number.number.clone(),
                day: number.day,
            });
        }
        Ok(events)
    }
}

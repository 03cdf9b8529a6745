//! Realistic flights for an empty airline: routes between the hubs of the
//! reference data, block times from great-circle distances, fares by
//! distance with noise. `airline seed` and the embedded mode use it.

use chrono::{DurationRound, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use annals::CommandContext;
use annals::projection::ProjectionStore;

use crate::airports::{self, Airport, HUBS};
use crate::app::Airline;
use crate::error::AppError;
use crate::scheduling::ScheduleFlight;
use crate::values::Money;

/// A seeded flight the airline refused.
#[derive(Debug, thiserror::Error)]
#[error("seeding flight AN{number}")]
pub struct SeedError {
    /// Its number.
    pub number: u32,
    /// Why.
    #[source]
    pub source: AppError,
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: &Airport, b: &Airport) -> f64 {
    let (lat1, lon1) = (a.latitude.to_radians(), a.longitude.to_radians());
    let (lat2, lon2) = (b.latitude.to_radians(), b.longitude.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// One generated flight.
pub fn generate_flight(rng: &mut StdRng, number: u32) -> Option<ScheduleFlight> {
    let hubs: Vec<&Airport> = HUBS
        .iter()
        .filter_map(|code| airports::lookup(code))
        .collect();
    if hubs.len() < 2 {
        return None;
    }
    // Pick a route 300 to 12,000 km long (no hops across town, no impossible legs).
    let (from, to, km) = loop {
        let a = hubs[rng.random_range(0..hubs.len())];
        let b = hubs[rng.random_range(0..hubs.len())];
        let km = distance_km(a, b);
        if (300.0..=12_000.0).contains(&km) {
            break (a.code, b.code, km);
        }
    };
    // Block time: cruise at ~830 km/h plus taxi and climb, to 5 minutes.
    let minutes = ((km / 830.0 * 60.0 + 35.0) / 5.0).round() as i64 * 5;
    let day = rng.random_range(1..=30);
    let slot = rng.random_range(6 * 12..23 * 12); // 06:00 to 22:55 UTC, 5-minute slots
    let today = Utc::now().duration_trunc(TimeDelta::days(1)).ok()?;
    let departure = today + TimeDelta::days(day) + TimeDelta::minutes(slot * 5);
    let arrival = departure + TimeDelta::minutes(minutes);
    // Fares: a base plus a rate per kilometre, with demand noise, ending in 9 dollars.
    let dollars = (59.0 + km * 0.085) * rng.random_range(0.8..1.45);
    let dollars = ((dollars / 10.0).floor() * 10.0 + 9.0) as i64;
    let seats = match km {
        k if k < 1_500.0 => [150, 174, 180][rng.random_range(0..3)],
        k if k < 5_000.0 => [180, 200, 220][rng.random_range(0..3)],
        _ => [250, 296, 350][rng.random_range(0..3)],
    };
    Some(ScheduleFlight {
        flight_id: Uuid::now_v7(),
        flight_number: format!("AN{number}").parse().ok()?,
        from: from.parse().ok()?,
        to: to.parse().ok()?,
        departure,
        arrival,
        seats,
        price: Money::usd(dollars * 100),
    })
}

/// Schedules `count` realistic flights between the hubs ([`HUBS`]) in the
/// next 30 days, prices in USD; `progress` hears each one.
/// Deterministic routes and fares for a given `seed`.
pub async fn seed_flights<S: ProjectionStore + Clone>(
    airline: &Airline<S>,
    count: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<usize, SeedError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut scheduled = 0;
    for i in 0..count {
        let number = 100 + (i as u32 % 9_900);
        let Some(command) = generate_flight(&mut rng, number) else {
            break;
        };
        airline
            .schedule_flight(command, CommandContext::default())
            .await
            .map_err(|source| SeedError { number, source })?;
        scheduled += 1;
        progress(scheduled);
    }
    Ok(scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hub_has_coordinates() {
        for hub in HUBS {
            let airport = airports::lookup(hub).unwrap_or_else(|| panic!("{hub} missing"));
            assert!(airport.latitude != 0.0 || airport.longitude != 0.0, "{hub}");
        }
        let (jfk, lhr) = (
            airports::lookup("JFK").unwrap(),
            airports::lookup("LHR").unwrap(),
        );
        assert!((5_500.0..5_600.0).contains(&distance_km(jfk, lhr)));
    }

    #[test]
    fn generated_flights_are_plausible() {
        let mut rng = StdRng::seed_from_u64(7);
        for number in 100..400 {
            let flight = generate_flight(&mut rng, number).unwrap();
            assert_ne!(flight.from, flight.to);
            let hours = (flight.arrival - flight.departure).num_minutes() as f64 / 60.0;
            assert!((0.9..16.0).contains(&hours), "{hours} h");
            assert!(flight.departure > Utc::now());
            assert!(flight.departure < Utc::now() + TimeDelta::days(32));
            assert!((5_000..500_000).contains(&flight.price.amount));
            assert_eq!(flight.price.amount % 100, 0);
        }
    }
}

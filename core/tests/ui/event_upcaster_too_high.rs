use annals::{DomainEvent, UpcastError};
use serde_json::Value;

fn step(v: Value) -> Result<Value, UpcastError> {
    Ok(v)
}

#[derive(DomainEvent)]
enum SeatEvent {
    #[event(version = 2, upcast(v1 = step, v2 = step))]
    SeatHeld { seat: String },
    #[event(upcast(v1 = step))]
    SeatReleased { seat: String },
}

fn main() {}

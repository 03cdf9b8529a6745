use annals::{DomainEvent, UpcastError};
use serde_json::Value;

fn v1_to_v2(v: Value) -> Result<Value, UpcastError> {
    Ok(v)
}

#[derive(DomainEvent)]
enum SeatEvent {
    #[event(version = 3, upcast(v1 = v1_to_v2))]
    SeatHeld { seat: String },
    #[event(version = 2)]
    SeatReleased { seat: String },
    #[event(version = 4)]
    SeatMoved { seat: String },
}

fn main() {}

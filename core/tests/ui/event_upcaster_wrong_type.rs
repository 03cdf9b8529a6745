use annals::DomainEvent;
use serde_json::Value;

fn v1_to_v2(v: Value) -> Value {
    v
}

#[derive(DomainEvent)]
enum SeatEvent {
    #[event(version = 2, upcast(v1 = v1_to_v2))]
    SeatHeld { seat: String },
}

fn main() {}

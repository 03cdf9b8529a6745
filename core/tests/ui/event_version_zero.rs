use annals::DomainEvent;

#[derive(DomainEvent)]
enum SeatEvent {
    #[event(version = 0)]
    SeatHeld { seat: String },
}

fn main() {}

use annals::DomainEvent;

#[derive(DomainEvent)]
enum SeatEvent {
    SeatHeld {
        seat: String,
    },
    #[event(name = "SeatHeld")]
    SeatHeldAgain {
        seat: String,
    },
}

fn main() {}

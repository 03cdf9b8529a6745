use annals::DomainEvent;

#[derive(DomainEvent)]
struct SeatHeld {
    seat: String,
}

fn main() {}

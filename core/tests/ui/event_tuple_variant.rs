use annals::DomainEvent;

#[derive(DomainEvent)]
enum SeatEvent {
    SeatHeld(String, u32),
}

fn main() {}

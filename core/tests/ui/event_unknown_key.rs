use annals::DomainEvent;

#[derive(DomainEvent)]
enum SeatEvent {
    #[event(versoin = 2)]
    SeatHeld { seat: String },
    #[event(upcast(from1 = step))]
    SeatReleased { seat: String },
}

fn main() {}

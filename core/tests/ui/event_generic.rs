use annals::DomainEvent;

#[derive(DomainEvent)]
enum SeatEvent<T> {
    SeatHeld { seat: T },
}

fn main() {}

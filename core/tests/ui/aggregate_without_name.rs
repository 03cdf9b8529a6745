use annals::AggregateType;

#[derive(Default, AggregateType)]
struct FlightBooking;

fn main() {}

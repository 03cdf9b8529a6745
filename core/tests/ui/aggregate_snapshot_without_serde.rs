use annals::AggregateType;

#[derive(Default, AggregateType)]
#[aggregate(name = "flight", snapshot)]
struct Flight {
    seats: u32,
}

fn main() {}

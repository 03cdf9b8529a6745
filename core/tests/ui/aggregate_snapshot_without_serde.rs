use annals::Aggregate;

#[derive(Default, Aggregate)]
#[aggregate(snapshot)]
struct Flight {
    seats: u32,
}

fn main() {}

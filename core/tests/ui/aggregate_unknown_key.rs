use annals::AggregateType;

#[derive(Default, AggregateType)]
#[aggregate(nmae = "flight", snapshot_version = 2)]
struct Flight;

fn main() {}

use annals::Aggregate;

#[derive(Default, Aggregate)]
#[aggregate(nmae = "flight", snapshot_version = 2)]
struct Flight;

fn main() {}

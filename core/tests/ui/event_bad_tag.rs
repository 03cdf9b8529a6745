use annals::DomainEvent;

#[derive(DomainEvent)]
enum Bad {
    Named {
        #[tag = "x"]
        id: String,
    },
    Newtype(#[tag] String),
}

fn main() {}

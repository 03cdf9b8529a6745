//! The airline showcase service.
fn main() {
    println!("airline: coming soon");
}

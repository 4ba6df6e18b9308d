//! (being written: node figures)
fn main() {}

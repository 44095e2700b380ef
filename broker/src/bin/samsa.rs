//! The `samsa` command-line entry point.
fn main() {}

//! Pure-Rust Kafka client over `Net` (client helper).

//! Kafka error codes (codec helper).

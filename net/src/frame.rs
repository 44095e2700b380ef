//! Length-prefixed frame I/O with named bounds (codec helper).

//! The API versions this broker serves (codec helper).

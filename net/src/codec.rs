//! Request/response header codec and dispatch helpers (codec helper).

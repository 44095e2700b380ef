//! The broker's view of the wire: samsa-net's framing, request-header and body codec, and the
//! versions table, re-exported in one place so the handlers name one module.
//! Never panics on input bytes (samsa-net's contract); holds no logic of its own.

pub use samsa_net::codec::{
    api_versions_fallback, decode_body, decode_request_header, encode_response, CodecError,
    RequestFrame,
};
pub use samsa_net::frame::{read_frame, write_frame, FrameError};
pub use samsa_net::versions::{api_versions_response, supported, SUPPORTED};

//! Request/response header codec and typed body decoding over kafka-protocol 0.18 (codec helper).
//!
//! Broker side: `decode_request_header` parses the request header by hand (api key, version,
//! correlation id, client id, header tagged fields) and rejects unknown keys and versions outside
//! `versions::SUPPORTED` with a typed error that carries the correlation id; `decode_body` decodes
//! the body with the crate; `encode_response` picks the response-header version (ApiVersions
//! always uses v0); `api_versions_fallback` is the KIP-511 answer. Client side: `encode_request`
//! and `decode_response`.
//!
//! What reading kafka-protocol 0.18's decoders found (`src/protocol/types.rs`, `buf.rs`):
//! - `Array`/`CompactArray` decode call `Vec::with_capacity(n)` with the count from the wire
//!   (up to 2^31-1, or 2^32-2 for compact arrays) before reading any element. With elements of
//!   tens of bytes that is a request for hundreds of GiB, which aborts the process (allocation
//!   failure is not a panic and cannot be caught). `decode_body` therefore first runs
//!   `guard::prescan`, our own schema walk of every request we serve, which rejects any array
//!   count larger than the bytes left in the frame (every element takes at least one byte), so the
//!   crate never sees a count it could over-allocate from. Together with the frame bound
//!   (`socket.request.max.bytes`) this bounds every decode allocation by the frame size.
//! - Strings and bytes use `try_get_bytes` after a length check: no over-allocation there.
//! - `decode_request_header_from_buffer` peeks bytes 0..4 without a length check (panics on a
//!   short frame), so we never call it: the header is parsed here.
//! - No `unwrap` on input was found in the decode paths; as a second line of defence every crate
//!   decode still runs inside `catch_unwind`, so a panic we did not find becomes `Malformed`.
//!
//! Never panics on input; never allocates from an unchecked wire count.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use crate::error::{code, ErrorCode};
use crate::versions;

#[allow(missing_docs)]
mod schema;

/// Longest client id we keep (Kafka's is an int16-length string, so this is the wire maximum).
pub const CLIENT_ID_BYTES_MAX: usize = i16::MAX as usize;
/// Bytes of api key + api version + correlation id, the part of every request header.
pub const REQUEST_HEADER_FIXED_BYTES: usize = 8;
/// The ApiVersions header version used for every ApiVersions response (KIP-511).
pub const API_VERSIONS_RESPONSE_HEADER_VERSION: i16 = 0;

/// One request frame after its header has been parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFrame {
    /// Kafka api key.
    pub api_key: i16,
    /// Request version.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// Client id from the header (lossy UTF-8), if present and not null.
    pub client_id: Option<String>,
    /// The request body, after the header.
    pub body: Bytes,
}

/// Why a request or response could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The frame is too short to hold even a correlation id: close the connection.
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// The api key is not one Kafka defines: close the connection.
    UnknownApiKey {
        /// Key as sent.
        api_key: i16,
        /// Version as sent.
        api_version: i16,
        /// Correlation id as sent.
        correlation_id: i32,
    },
    /// The api key is known but this broker does not serve it at this version. For ApiVersions
    /// answer with `api_versions_fallback`; for anything else Kafka closes the connection.
    UnsupportedVersion {
        /// Key as sent.
        api_key: i16,
        /// Version as sent.
        api_version: i16,
        /// Correlation id as sent.
        correlation_id: i32,
    },
    /// The header or body does not parse.
    Malformed {
        /// Key as sent.
        api_key: i16,
        /// Version as sent.
        api_version: i16,
        /// Correlation id, when the header got that far.
        correlation_id: Option<i32>,
        /// What was wrong, for logs.
        detail: String,
    },
    /// Encoding failed (a value the chosen version cannot express).
    Encode {
        /// Key being encoded.
        api_key: i16,
        /// Version being encoded.
        api_version: i16,
        /// What was wrong.
        detail: String,
    },
}

impl CodecError {
    /// The correlation id, when the header got far enough to read it.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            CodecError::Truncated { .. } | CodecError::Encode { .. } => None,
            CodecError::UnknownApiKey { correlation_id, .. }
            | CodecError::UnsupportedVersion { correlation_id, .. } => Some(*correlation_id),
            CodecError::Malformed { correlation_id, .. } => *correlation_id,
        }
    }

    /// The Kafka error code this failure maps to.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            CodecError::UnknownApiKey { .. } | CodecError::UnsupportedVersion { .. } => {
                code::UNSUPPORTED_VERSION
            }
            CodecError::Truncated { .. } | CodecError::Malformed { .. } => code::INVALID_REQUEST,
            CodecError::Encode { .. } => code::UNKNOWN_SERVER_ERROR,
        }
    }

    /// The bytes to send back, if Kafka would answer rather than close the connection: only an
    /// ApiVersions request at an unsupported version is answered (KIP-511).
    pub fn response(&self) -> Option<BytesMut> {
        match self {
            CodecError::UnsupportedVersion {
                api_key,
                correlation_id,
                ..
            } if *api_key == ApiKey::ApiVersions as i16 => {
                Some(api_versions_fallback(*correlation_id))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Truncated { len } => write!(f, "request frame of {len} bytes too short"),
            CodecError::UnknownApiKey {
                api_key,
                api_version,
                correlation_id,
            } => write!(
                f,
                "unknown api key {api_key} v{api_version} (correlation id {correlation_id})"
            ),
            CodecError::UnsupportedVersion {
                api_key,
                api_version,
                correlation_id,
            } => write!(
                f,
                "unsupported version: api key {api_key} v{api_version} \
                 (correlation id {correlation_id})"
            ),
            CodecError::Malformed {
                api_key,
                api_version,
                correlation_id,
                detail,
            } => write!(
                f,
                "malformed api key {api_key} v{api_version} (correlation id {correlation_id:?}): \
                 {detail}"
            ),
            CodecError::Encode {
                api_key,
                api_version,
                detail,
            } => {
                write!(
                    f,
                    "cannot encode api key {api_key} v{api_version}: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// Reads an unsigned varint (at most 5 bytes) from `buf`.
pub(crate) fn get_uvarint(buf: &mut Bytes) -> Result<u32, &'static str> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return Err("varint truncated");
        }
        let b = buf.get_u8();
        if i == 4 && b > 0x0f {
            return Err("varint overflows 32 bits");
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 5 bytes")
}

/// Skips a tagged-field section (count, then tag, size, bytes for each).
pub(crate) fn skip_tagged_fields(buf: &mut Bytes) -> Result<(), &'static str> {
    let count = get_uvarint(buf)?;
    // Each field takes at least two bytes (tag and size), so the loop is bounded by the input.
    if count as usize > buf.remaining() / 2 {
        return Err("tagged field count exceeds remaining bytes");
    }
    for _ in 0..count {
        let _tag = get_uvarint(buf)?;
        let size = get_uvarint(buf)? as usize;
        if size > buf.remaining() {
            return Err("tagged field runs past the end");
        }
        buf.advance(size);
    }
    Ok(())
}

/// Parses the request header. Unknown api keys and versions outside `versions::SUPPORTED` are
/// typed errors carrying the correlation id; the body is not looked at.
pub fn decode_request_header(frame: Bytes) -> Result<RequestFrame, CodecError> {
    if frame.len() < REQUEST_HEADER_FIXED_BYTES {
        return Err(CodecError::Truncated { len: frame.len() });
    }
    let mut buf = frame;
    let api_key = buf.get_i16();
    let api_version = buf.get_i16();
    let correlation_id = buf.get_i32();
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Err(CodecError::UnknownApiKey {
            api_key,
            api_version,
            correlation_id,
        });
    };
    let malformed = |detail: &str| CodecError::Malformed {
        api_key,
        api_version,
        correlation_id: Some(correlation_id),
        detail: detail.to_string(),
    };
    // The header version of an out-of-range version is still well defined by the crate (the
    // flexible cut-over), which is what KIP-511 relies on to read an ApiVersions v99 header.
    let header_version = key.request_header_version(api_version);
    let mut client_id = None;
    if header_version >= 1 {
        if buf.remaining() < 2 {
            return Err(malformed("client id length truncated"));
        }
        let len = buf.get_i16();
        if len >= 0 {
            let len = len as usize;
            if len > buf.remaining() {
                return Err(malformed("client id runs past the end"));
            }
            const _: () = assert!(CLIENT_ID_BYTES_MAX >= i16::MAX as usize);
            client_id = Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            buf.advance(len);
        } else if len != -1 {
            return Err(malformed("negative client id length"));
        }
    }
    if !versions::is_supported(api_key, api_version) {
        return Err(CodecError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    if header_version >= 2 {
        skip_tagged_fields(&mut buf).map_err(malformed)?;
    }
    Ok(RequestFrame {
        api_key,
        api_version,
        correlation_id,
        client_id,
        body: buf,
    })
}

/// Decodes a request body with kafka-protocol, after `guard::prescan` has checked every array
/// count against the bytes left. Never panics, never over-allocates.
pub fn decode_body<T: Decodable + Message>(frame: &RequestFrame) -> Result<T, CodecError> {
    let malformed = |detail: String| CodecError::Malformed {
        api_key: frame.api_key,
        api_version: frame.api_version,
        correlation_id: Some(frame.correlation_id),
        detail,
    };
    if frame.api_version < T::VERSIONS.min || frame.api_version > T::VERSIONS.max {
        return Err(CodecError::UnsupportedVersion {
            api_key: frame.api_key,
            api_version: frame.api_version,
            correlation_id: frame.correlation_id,
        });
    }
    guard::prescan(frame.api_key, frame.api_version, &frame.body[..]).map_err(malformed)?;
    decode_guarded::<T>(frame.body.clone(), frame.api_version).map_err(malformed)
}

/// Runs the crate's decoder, turning errors and (defensively) panics into a message.
fn decode_guarded<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(|| T::decode(&mut body, version))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked".to_string()),
    }
}

fn response_header_version(api_key: i16, api_version: i16) -> Result<i16, String> {
    if api_key == ApiKey::ApiVersions as i16 {
        return Ok(API_VERSIONS_RESPONSE_HEADER_VERSION);
    }
    let key = ApiKey::try_from(api_key).map_err(|()| format!("unknown api key {api_key}"))?;
    Ok(key.response_header_version(api_version))
}

/// Encodes a response frame body (header + message, without the length prefix).
pub fn encode_response<T: Encodable>(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    response: &T,
) -> Result<BytesMut, CodecError> {
    let encode_err = |detail: String| CodecError::Encode {
        api_key,
        api_version,
        detail,
    };
    let header_version = response_header_version(api_key, api_version).map_err(encode_err)?;
    let size = response
        .compute_size(api_version)
        .map_err(|e| encode_err(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(5 + size);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields
    }
    response
        .encode(&mut buf, api_version)
        .map_err(|e| encode_err(e.to_string()))?;
    Ok(buf)
}

/// KIP-511: the answer to an ApiVersions request at a version we do not serve. Error 35 and a
/// v0 body listing only ApiVersions' own range, under response header v0 (as Kafka does).
pub fn api_versions_fallback(correlation_id: i32) -> BytesMut {
    let response = ApiVersionsResponse::default()
        .with_error_code(code::UNSUPPORTED_VERSION)
        .with_api_keys(vec![ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(versions::API_VERSIONS_MIN)
            .with_max_version(versions::API_VERSIONS_MAX)]);
    // Hand-written v0 layout: correlation id, error code, array of (key, min, max). Written by
    // hand so it cannot fail; a test checks it against the crate's v0 encoding.
    let mut buf = BytesMut::with_capacity(4 + 2 + 4 + 6 * response.api_keys.len());
    buf.put_i32(correlation_id);
    buf.put_i16(response.error_code);
    buf.put_i32(response.api_keys.len() as i32);
    for k in &response.api_keys {
        buf.put_i16(k.api_key);
        buf.put_i16(k.min_version);
        buf.put_i16(k.max_version);
    }
    buf
}

/// Client side: encodes a request frame body (header + message, without the length prefix).
pub fn encode_request<T: Encodable>(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    request: &T,
) -> Result<BytesMut, CodecError> {
    let encode_err = |detail: String| CodecError::Encode {
        api_key,
        api_version,
        detail,
    };
    let key = ApiKey::try_from(api_key).map_err(|()| encode_err("unknown api key".into()))?;
    let header_version = key.request_header_version(api_version);
    let size = request
        .compute_size(api_version)
        .map_err(|e| encode_err(e.to_string()))?;
    let client_id_len = client_id.map_or(0, str::len);
    if client_id_len > CLIENT_ID_BYTES_MAX {
        return Err(encode_err(format!("client id of {client_id_len} bytes")));
    }
    let mut buf = BytesMut::with_capacity(REQUEST_HEADER_FIXED_BYTES + 3 + client_id_len + size);
    buf.put_i16(api_key);
    buf.put_i16(api_version);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        match client_id {
            Some(id) => {
                buf.put_i16(id.len() as i16);
                buf.put_slice(id.as_bytes());
            }
            None => buf.put_i16(-1),
        }
    }
    if header_version >= 2 {
        buf.put_u8(0); // no tagged fields
    }
    request
        .encode(&mut buf, api_version)
        .map_err(|e| encode_err(e.to_string()))?;
    Ok(buf)
}

/// Client side: decodes a response frame body, returning its correlation id and message.
/// Responses are decoded by the crate inside `catch_unwind`; the array-count prescan covers
/// requests only (a broker we talk to is not an adversary the way a client can be).
pub fn decode_response<T: Decodable>(
    api_key: i16,
    api_version: i16,
    frame: Bytes,
) -> Result<(i32, T), CodecError> {
    let malformed = |correlation_id: Option<i32>, detail: String| CodecError::Malformed {
        api_key,
        api_version,
        correlation_id,
        detail,
    };
    let header_version =
        response_header_version(api_key, api_version).map_err(|d| malformed(None, d))?;
    let mut buf = frame;
    if buf.remaining() < 4 {
        return Err(CodecError::Truncated {
            len: buf.remaining(),
        });
    }
    let correlation_id = buf.get_i32();
    if header_version >= 1 {
        skip_tagged_fields(&mut buf).map_err(|d| malformed(Some(correlation_id), d.into()))?;
    }
    let body =
        decode_guarded::<T>(buf, api_version).map_err(|d| malformed(Some(correlation_id), d))?;
    Ok((correlation_id, body))
}

/// Our own walk of request bodies, checking every array count against the bytes left, so the
/// crate's `Vec::with_capacity(count)` is bounded by the frame size. The layout tables come from
/// `schema.rs` (generated from the crate's message definitions by `net/tools/gen_guard_schema.py`).
/// The walk reads exactly what the crate's decoder reads, including known tagged fields, which
/// the crate decodes in place rather than by their size prefix.
pub mod guard {
    /// Deepest struct nesting walked (Kafka's request schemas nest at most 4 deep).
    pub const NESTING_MAX: usize = 16;

    /// One wire field kind.
    #[derive(Debug)]
    pub enum Ty {
        /// int8.
        I8,
        /// int16.
        I16,
        /// int32.
        I32,
        /// int64.
        I64,
        /// uint16.
        U16,
        /// uint32.
        U32,
        /// float64.
        F64,
        /// 16-byte uuid.
        Uuid,
        /// boolean (one byte).
        Bool,
        /// (nullable) string, compact in flexible versions.
        Str,
        /// (nullable) bytes, compact in flexible versions.
        Bytes,
        /// unsigned varint.
        UVarInt,
        /// zigzag varint.
        VarInt,
        /// zigzag varlong.
        VarLong,
        /// (nullable) array, compact in flexible versions.
        Array(&'static Ty),
        /// nested struct.
        Struct(&'static Schema),
        /// int8 presence flag, then the struct if it is 1.
        OptStruct(&'static Schema),
    }

    /// A field present in versions `min..=max`.
    #[derive(Debug)]
    pub struct Field {
        /// First version with the field.
        pub min: i16,
        /// Last version with the field.
        pub max: i16,
        /// Its kind.
        pub ty: Ty,
    }

    /// A known tagged field, valid in versions `min..=max`.
    #[derive(Debug)]
    pub struct Tagged {
        /// Tag number.
        pub tag: u32,
        /// First version.
        pub min: i16,
        /// Last version.
        pub max: i16,
        /// Its kind.
        pub ty: Ty,
    }

    /// The layout of one struct (a request or a nested struct).
    #[derive(Debug)]
    pub struct Schema {
        /// kafka-protocol's type name.
        pub name: &'static str,
        /// First version the crate decodes.
        pub min: i16,
        /// Last version the crate decodes.
        pub max: i16,
        /// First flexible (KIP-482) version.
        pub flexible_min: i16,
        /// Fields in wire order.
        pub fields: &'static [Field],
        /// Known tagged fields.
        pub tagged: &'static [Tagged],
    }

    /// The schema of request `api_key`, if the crate models it.
    pub fn request_schema(api_key: i16) -> Option<&'static Schema> {
        super::schema::REQUESTS
            .iter()
            .find(|(k, _)| *k == api_key)
            .map(|(_, s)| *s)
    }

    /// Walks `body` of (`api_key`, `api_version`); `Err` if any length or count could not be
    /// satisfied by the bytes that follow it, or the layout does not parse.
    pub fn prescan(api_key: i16, api_version: i16, body: &[u8]) -> Result<(), String> {
        let schema = request_schema(api_key).ok_or_else(|| format!("no schema for {api_key}"))?;
        let mut w = Walker {
            buf: body,
            at: 0,
            version: api_version,
        };
        w.walk_struct(schema, 0)
    }

    struct Walker<'a> {
        buf: &'a [u8],
        at: usize,
        version: i16,
    }

    fn flexible(s: &Schema, version: i16) -> bool {
        version >= s.flexible_min
    }

    /// Fewest bytes a value of `ty` takes at `version` (used to bound array counts).
    fn min_bytes(ty: &Ty, version: i16, flex: bool, depth: usize) -> u64 {
        match ty {
            Ty::I8 | Ty::Bool | Ty::UVarInt | Ty::VarInt | Ty::VarLong | Ty::OptStruct(_) => 1,
            Ty::I16 | Ty::U16 => 2,
            Ty::I32 | Ty::U32 => 4,
            Ty::I64 | Ty::F64 => 8,
            Ty::Uuid => 16,
            Ty::Str => {
                if flex {
                    1
                } else {
                    2
                }
            }
            Ty::Bytes | Ty::Array(_) => {
                if flex {
                    1
                } else {
                    4
                }
            }
            Ty::Struct(s) => {
                if depth > NESTING_MAX {
                    return 1;
                }
                let f = flexible(s, version);
                let fields: u64 = s
                    .fields
                    .iter()
                    .filter(|x| x.min <= version && version <= x.max)
                    .map(|x| min_bytes(&x.ty, version, f, depth + 1))
                    .sum();
                fields + u64::from(f)
            }
        }
    }

    impl Walker<'_> {
        fn remaining(&self) -> usize {
            self.buf.len() - self.at
        }

        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            if n > self.remaining() {
                return Err(format!(
                    "need {n} bytes at {}, have {}",
                    self.at,
                    self.remaining()
                ));
            }
            let s = &self.buf[self.at..self.at + n];
            self.at += n;
            Ok(s)
        }

        fn uvarint(&mut self) -> Result<u32, String> {
            let mut value: u32 = 0;
            for i in 0..5 {
                let b = self.take(1)?[0];
                if i == 4 && b > 0x0f {
                    return Err("varint overflows 32 bits".into());
                }
                value |= u32::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(value);
                }
            }
            Err("varint too long".into())
        }

        fn uvarlong(&mut self) -> Result<u64, String> {
            let mut value: u64 = 0;
            for i in 0..10 {
                let b = self.take(1)?[0];
                value |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(value);
                }
            }
            Err("varlong too long".into())
        }

        fn i16(&mut self) -> Result<i16, String> {
            let b = self.take(2)?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        }

        fn i32(&mut self) -> Result<i32, String> {
            let b = self.take(4)?;
            Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }

        /// Reads a length: `None` for null, `Some(n)` otherwise.
        fn length(&mut self, flex: bool, wide: bool) -> Result<Option<usize>, String> {
            if flex {
                let n = self.uvarint()?;
                return Ok(n.checked_sub(1).map(|n| n as usize));
            }
            let n = if wide {
                self.i32()?
            } else {
                i32::from(self.i16()?)
            };
            match n {
                -1 => Ok(None),
                n if n >= 0 => Ok(Some(n as usize)),
                n => Err(format!("negative length {n}")),
            }
        }

        fn walk_ty(&mut self, ty: &Ty, flex: bool, depth: usize) -> Result<(), String> {
            match ty {
                Ty::I8 | Ty::Bool => self.take(1).map(drop),
                Ty::I16 | Ty::U16 => self.take(2).map(drop),
                Ty::I32 | Ty::U32 => self.take(4).map(drop),
                Ty::I64 | Ty::F64 => self.take(8).map(drop),
                Ty::Uuid => self.take(16).map(drop),
                Ty::UVarInt | Ty::VarInt => self.uvarint().map(drop),
                Ty::VarLong => self.uvarlong().map(drop),
                Ty::Str => match self.length(flex, false)? {
                    Some(n) => self.take(n).map(drop),
                    None => Ok(()),
                },
                Ty::Bytes => match self.length(flex, true)? {
                    Some(n) => self.take(n).map(drop),
                    None => Ok(()),
                },
                Ty::Array(elem) => {
                    let Some(count) = self.length(flex, true)? else {
                        return Ok(());
                    };
                    let each = min_bytes(elem, self.version, flex, depth).max(1);
                    let need = (count as u64).saturating_mul(each);
                    if need > self.remaining() as u64 {
                        return Err(format!(
                            "array of {count} elements (>= {each} bytes each) at {} with {} \
                             bytes left",
                            self.at,
                            self.remaining()
                        ));
                    }
                    for _ in 0..count {
                        self.walk_ty(elem, flex, depth)?;
                    }
                    Ok(())
                }
                Ty::Struct(s) => self.walk_struct(s, depth + 1),
                Ty::OptStruct(s) => {
                    if self.take(1)?[0] as i8 == 1 {
                        self.walk_struct(s, depth + 1)
                    } else {
                        Ok(())
                    }
                }
            }
        }

        fn walk_struct(&mut self, s: &Schema, depth: usize) -> Result<(), String> {
            let v = self.version;
            if depth > NESTING_MAX {
                return Err("nesting too deep".into());
            }
            if v < s.min || v > s.max {
                return Err(format!("{} has no version {v}", s.name));
            }
            let flex = flexible(s, v);
            for f in s.fields.iter().filter(|f| f.min <= v && v <= f.max) {
                self.walk_ty(&f.ty, flex, depth)?;
            }
            if !flex {
                return Ok(());
            }
            let count = self.uvarint()?;
            if count as usize > self.remaining() / 2 {
                return Err("tagged field count exceeds remaining bytes".into());
            }
            for _ in 0..count {
                let tag = self.uvarint()?;
                let size = self.uvarint()? as usize;
                if !s.tagged.iter().any(|t| t.tag == tag) {
                    self.take(size)?;
                    continue;
                }
                // Like the crate: a known tag is decoded in place, ignoring its size prefix.
                let Some(t) = s
                    .tagged
                    .iter()
                    .find(|t| t.tag == tag && t.min <= v && v <= t.max)
                else {
                    return Err(format!("tag {tag} not valid for {} v{v}", s.name));
                };
                self.walk_ty(&t.ty, flex, depth)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    /// Records the largest single allocation each thread asks for, so tests can show that
    /// decoding hostile frames never requests memory out of proportion to the frame.
    struct PeakAlloc;

    thread_local! {
        static PEAK_BYTES: Cell<usize> = const { Cell::new(0) };
    }

    unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            let _ = PEAK_BYTES.try_with(|p| p.set(p.get().max(layout.size())));
            std::alloc::System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            std::alloc::System.dealloc(ptr, layout)
        }
        unsafe fn realloc(
            &self,
            ptr: *mut u8,
            layout: std::alloc::Layout,
            new_size: usize,
        ) -> *mut u8 {
            let _ = PEAK_BYTES.try_with(|p| p.set(p.get().max(new_size)));
            std::alloc::System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static ALLOC: PeakAlloc = PeakAlloc;

    fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        PEAK_BYTES.with(|p| p.set(0));
        let r = f();
        (r, PEAK_BYTES.with(|p| p.get()))
    }

    fn unhex(s: &str) -> Bytes {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let v: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        Bytes::from(v)
    }

    /// The 70-byte record batch of `batch::tests` (one record, key "k", value "v").
    const GOLDEN_BATCH: &str = "00000000000000000000003affffffff02e99b8dd8000000000000000001\
        8bcfe568000000018bcfe56800ffffffffffffffffffffffffffff0000000110000000026b027600";

    /// ApiVersions v3 as librdkafka 2.0.2 sends it: header v2 (client id "rdkafka", no tags),
    /// compact strings "librdkafka" and "2.0.2", no tags. Written by hand from the protocol spec.
    const GOLDEN_API_VERSIONS_V3: &str =
        "0012 0003 00000001 0007 72646b61666b61 00 0b 6c696272646b61666b61 06 322e302e32 00";

    /// Produce v7 (non-flexible), correlation id 42, acks -1, timeout 30000, topic "t"
    /// partition 0 carrying GOLDEN_BATCH.
    fn golden_produce_v7() -> Bytes {
        unhex(&format!(
            "0000 0007 0000002a 0007 72646b61666b61 ffff ffff 00007530 00000001 0001 74 \
             00000001 00000000 00000046 {GOLDEN_BATCH}"
        ))
    }

    /// Produce v9 (flexible), correlation id 43, acks 1, topic "t" partition 3, same batch.
    fn golden_produce_v9() -> Bytes {
        unhex(&format!(
            "0000 0009 0000002b 0007 72646b61666b61 00 00 0001 00007530 02 02 74 02 00000003 \
             47 {GOLDEN_BATCH} 00 00 00"
        ))
    }

    #[test]
    fn golden_api_versions_v3() {
        let frame = decode_request_header(unhex(GOLDEN_API_VERSIONS_V3)).unwrap();
        assert_eq!(
            (frame.api_key, frame.api_version, frame.correlation_id),
            (18, 3, 1)
        );
        assert_eq!(frame.client_id.as_deref(), Some("rdkafka"));
        let req: ApiVersionsRequest = decode_body(&frame).unwrap();
        assert_eq!(req.client_software_name.as_str(), "librdkafka");
        assert_eq!(req.client_software_version.as_str(), "2.0.2");
        let again = encode_request(18, 3, 1, Some("rdkafka"), &req).unwrap();
        assert_eq!(&again[..], &unhex(GOLDEN_API_VERSIONS_V3)[..]);
    }

    fn check_golden_produce(
        bytes: Bytes,
        version: i16,
        correlation_id: i32,
        acks: i16,
        partition: i32,
    ) {
        let frame = decode_request_header(bytes.clone()).unwrap();
        assert_eq!((frame.api_key, frame.api_version), (0, version));
        assert_eq!(frame.correlation_id, correlation_id);
        let req: ProduceRequest = decode_body(&frame).unwrap();
        assert_eq!(req.transactional_id, None);
        assert_eq!((req.acks, req.timeout_ms), (acks, 30000));
        assert_eq!(req.topic_data.len(), 1);
        assert_eq!(req.topic_data[0].name.as_str(), "t");
        let p = &req.topic_data[0].partition_data;
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].index, partition);
        assert_eq!(p[0].records.as_deref(), Some(&unhex(GOLDEN_BATCH)[..]));
        let again = encode_request(0, version, correlation_id, Some("rdkafka"), &req).unwrap();
        assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn golden_produce_v7_and_v9() {
        check_golden_produce(golden_produce_v7(), 7, 42, -1, 0);
        check_golden_produce(golden_produce_v9(), 9, 43, 1, 3);
    }

    #[test]
    fn api_versions_unsupported_version_gets_kip511_fallback() {
        // ApiVersions v99 with a v2 header and a body we must not need to parse.
        let bytes = unhex("0012 0063 00000007 0003 616263 00 ffffffff");
        let err = decode_request_header(bytes).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                api_key: 18,
                api_version: 99,
                correlation_id: 7
            }
        );
        assert_eq!(err.error_code(), code::UNSUPPORTED_VERSION);
        let response = err.response().unwrap();
        assert_eq!(
            &response[..],
            &unhex("00000007 0023 00000001 0012 0000 0004")[..]
        );
        // It is a well-formed v0 response under header v0.
        let (corr, body): (i32, ApiVersionsResponse) =
            decode_response(18, 0, response.freeze()).unwrap();
        assert_eq!(corr, 7);
        assert_eq!(body.error_code, 35);
        assert_eq!(body.api_keys.len(), 1);
        assert_eq!(body.api_keys[0].max_version, versions::API_VERSIONS_MAX);
        // The crate's own v0 encoding of the same response is byte-identical.
        let crate_v0 = encode_response(
            18,
            0,
            7,
            &ApiVersionsResponse::default()
                .with_error_code(35)
                .with_api_keys(vec![api_versions_response::ApiVersion::default()
                    .with_api_key(18)
                    .with_min_version(0)
                    .with_max_version(4)]),
        )
        .unwrap();
        assert_eq!(crate_v0, api_versions_fallback(7));
    }

    #[test]
    fn unknown_keys_unsupported_versions_and_short_frames() {
        let e = decode_request_header(unhex("03e8 0000 00000005 ffff")).unwrap_err();
        assert_eq!(
            e,
            CodecError::UnknownApiKey {
                api_key: 1000,
                api_version: 0,
                correlation_id: 5
            }
        );
        assert_eq!(e.correlation_id(), Some(5));
        assert!(e.response().is_none());
        // Produce v2 is older than record batch v2: unsupported, connection closes.
        let e = decode_request_header(unhex("0000 0002 00000006 ffff")).unwrap_err();
        assert!(matches!(
            e,
            CodecError::UnsupportedVersion {
                correlation_id: 6,
                ..
            }
        ));
        assert!(e.response().is_none());
        // A group API the table does not serve yet (ShareGroupHeartbeat, KIP-932).
        let e = decode_request_header(unhex("004c 0000 00000008 ffff")).unwrap_err();
        assert!(matches!(
            e,
            CodecError::UnsupportedVersion { api_key: 76, .. }
        ));
        assert_eq!(
            decode_request_header(unhex("0012 0003 0000")).unwrap_err(),
            CodecError::Truncated { len: 6 }
        );
        // Client id longer than the frame.
        let e = decode_request_header(unhex("0003 0001 00000009 0010 6162")).unwrap_err();
        assert!(
            matches!(
                e,
                CodecError::Malformed {
                    correlation_id: Some(9),
                    ..
                }
            ),
            "{e}"
        );
        // Null client id is fine.
        let f = decode_request_header(unhex("0003 0001 00000009 ffff 00000000")).unwrap();
        assert_eq!(f.client_id, None);
        assert_eq!(&f.body[..], &[0, 0, 0, 0]);
    }

    #[test]
    fn response_header_versions() {
        let metadata = MetadataResponse::default();
        let v8 = encode_response(3, 8, 77, &metadata).unwrap();
        let v9 = encode_response(3, 9, 77, &metadata).unwrap();
        // Flexible versions add the header's empty tagged-field section.
        assert_eq!(&v9[..5], &[0, 0, 0, 77, 0]);
        let (corr, back): (i32, MetadataResponse) = decode_response(3, 9, v9.freeze()).unwrap();
        assert_eq!((corr, back), (77, metadata.clone()));
        let (corr, _): (i32, MetadataResponse) = decode_response(3, 8, v8.freeze()).unwrap();
        assert_eq!(corr, 77);
        // ApiVersions v3 is flexible but its response header stays v0.
        let av = encode_response(18, 3, 5, &versions::api_versions_response(0)).unwrap();
        let (corr, back): (i32, ApiVersionsResponse) = decode_response(18, 3, av.freeze()).unwrap();
        assert_eq!(corr, 5);
        assert_eq!(back.api_keys.len(), versions::SUPPORTED.len());
    }

    #[test]
    fn hostile_array_counts_are_rejected_before_the_crate_allocates() {
        // Produce v7 whose topic array claims i32::MAX entries.
        let mut v7 = golden_produce_v7().to_vec();
        let at = 2 + 2 + 4 + 2 + 7 + 2 + 2 + 4;
        v7[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let frame = decode_request_header(Bytes::from(v7)).unwrap();
        let (r, peak) = peak_during(|| decode_body::<ProduceRequest>(&frame));
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                CodecError::Malformed {
                    correlation_id: Some(42),
                    ..
                }
            ),
            "{e}"
        );
        assert!(peak < 4096, "peak allocation {peak}");
        // Produce v9 whose compact topic array claims 2^32-2 entries.
        let mut v9 = golden_produce_v9().to_vec();
        let at = 2 + 2 + 4 + 2 + 7 + 1 + 1 + 2 + 4;
        v9.splice(at..at + 1, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        let frame = decode_request_header(Bytes::from(v9)).unwrap();
        let (r, peak) = peak_during(|| decode_body::<ProduceRequest>(&frame));
        assert!(matches!(r, Err(CodecError::Malformed { .. })));
        assert!(peak < 4096, "peak allocation {peak}");
    }

    #[test]
    fn every_served_request_has_a_schema() {
        for &(key, lo, hi) in versions::SUPPORTED {
            let s = guard::request_schema(key).expect("schema");
            assert!(s.min <= lo && hi <= s.max, "{}", s.name);
        }
    }

    macro_rules! served {
        ($($key:ident => $ty:ty),* $(,)?) => {
            /// Decodes `frame` as whatever request it is (all served api keys).
            fn decode_any(frame: &RequestFrame) -> Result<(), CodecError> {
                match ApiKey::try_from(frame.api_key) {
                    $(Ok(ApiKey::$key) => decode_body::<$ty>(frame).map(drop),)*
                    _ => Ok(()),
                }
            }

            /// A default request of `key` encoded at `version`, header included.
            fn encode_default(key: i16, version: i16) -> BytesMut {
                match ApiKey::try_from(key) {
                    $(Ok(ApiKey::$key) => {
                        encode_request(key, version, 1, Some("c"), &<$ty>::default()).unwrap()
                    })*
                    _ => panic!("not served: {key}"),
                }
            }
        };
    }

    served! {
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest,
        AlterConfigs => AlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeCluster => DescribeClusterRequest,
        DescribeQuorum => DescribeQuorumRequest,
        BrokerRegistration => BrokerRegistrationRequest,
        BrokerHeartbeat => BrokerHeartbeatRequest,
        AlterPartition => AlterPartitionRequest,
        DescribeTopicPartitions => DescribeTopicPartitionsRequest,
        ElectLeaders => ElectLeadersRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        DescribeLogDirs => DescribeLogDirsRequest,
        AlterReplicaLogDirs => AlterReplicaLogDirsRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        OffsetDelete => OffsetDeleteRequest,
        DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest,
        DeleteGroups => DeleteGroupsRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
    }

    /// Populated requests exercising nested arrays, strings, tagged fields.
    fn populated_samples() -> Vec<Bytes> {
        let mut out = vec![golden_produce_v7(), golden_produce_v9()];
        let name = || kafka_protocol::messages::TopicName(StrBytes::from_static_str("orders"));
        use kafka_protocol::protocol::StrBytes;
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name())),
        ]));
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(3)
                .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_value(Some(StrBytes::from_static_str("compact")))]),
        ]);
        let fetch = FetchRequest::default()
            .with_cluster_id(Some(StrBytes::from_static_str("cluster")))
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(name())
                .with_partitions(vec![fetch_request::FetchPartition::default(); 3])]);
        let list = ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
        ]);
        for v in 0..=13 {
            out.push(
                encode_request(3, v, 9, Some("m"), &metadata)
                    .unwrap()
                    .freeze(),
            );
        }
        for v in 2..=7 {
            out.push(encode_request(19, v, 9, None, &create).unwrap().freeze());
        }
        for v in 12..=16 {
            out.push(encode_request(1, v, 9, None, &fetch).unwrap().freeze());
        }
        for v in 4..=11 {
            let f = fetch.clone().with_cluster_id(None);
            out.push(encode_request(1, v, 9, None, &f).unwrap().freeze());
        }
        for v in 1..=9 {
            out.push(encode_request(2, v, 9, None, &list).unwrap().freeze());
        }
        for &(key, lo, hi) in versions::SUPPORTED {
            for v in lo..=hi {
                out.push(encode_default(key, v).freeze());
            }
        }
        out
    }

    /// The prescan and the crate agree on every valid request we can build.
    #[test]
    fn prescan_accepts_valid_requests_of_every_served_version() {
        for bytes in populated_samples() {
            let frame = decode_request_header(bytes.clone()).unwrap();
            guard::prescan(frame.api_key, frame.api_version, &frame.body)
                .unwrap_or_else(|e| panic!("{} v{}: {e}", frame.api_key, frame.api_version));
            decode_any(&frame).unwrap();
        }
    }

    /// Default `T` at every version the crate models: the prescan accepts what the crate wrote
    /// and the crate decodes what the prescan accepted.
    fn prescan_agrees_at_all_versions<T>(key: ApiKey) -> usize
    where
        T: Encodable + Decodable + Message + Default,
    {
        let mut checked = 0;
        for v in T::VERSIONS.min..=T::VERSIONS.max {
            let Ok(bytes) = encode_request(key as i16, v, 3, Some("c"), &T::default()) else {
                continue;
            };
            let mut body = bytes.freeze();
            body.advance(body.len() - T::default().compute_size(v).unwrap());
            guard::prescan(key as i16, v, &body).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
            let decoded = decode_guarded::<T>(body, v).unwrap();
            assert_eq!(
                decoded.compute_size(v).unwrap(),
                T::default().compute_size(v).unwrap()
            );
            checked += 1;
        }
        checked
    }

    /// The generated tables also hold for the group APIs the broker will serve next.
    #[test]
    fn prescan_agrees_with_crate_on_group_apis() {
        let n = prescan_agrees_at_all_versions::<FindCoordinatorRequest>(ApiKey::FindCoordinator)
            + prescan_agrees_at_all_versions::<JoinGroupRequest>(ApiKey::JoinGroup)
            + prescan_agrees_at_all_versions::<SyncGroupRequest>(ApiKey::SyncGroup)
            + prescan_agrees_at_all_versions::<HeartbeatRequest>(ApiKey::Heartbeat)
            + prescan_agrees_at_all_versions::<LeaveGroupRequest>(ApiKey::LeaveGroup)
            + prescan_agrees_at_all_versions::<OffsetCommitRequest>(ApiKey::OffsetCommit)
            + prescan_agrees_at_all_versions::<OffsetFetchRequest>(ApiKey::OffsetFetch)
            + prescan_agrees_at_all_versions::<ListGroupsRequest>(ApiKey::ListGroups)
            + prescan_agrees_at_all_versions::<DescribeGroupsRequest>(ApiKey::DescribeGroups)
            + prescan_agrees_at_all_versions::<DeleteGroupsRequest>(ApiKey::DeleteGroups)
            + prescan_agrees_at_all_versions::<ConsumerGroupHeartbeatRequest>(
                ApiKey::ConsumerGroupHeartbeat,
            )
            + prescan_agrees_at_all_versions::<ShareFetchRequest>(ApiKey::ShareFetch)
            + prescan_agrees_at_all_versions::<AddPartitionsToTxnRequest>(
                ApiKey::AddPartitionsToTxn,
            )
            + prescan_agrees_at_all_versions::<EndTxnRequest>(ApiKey::EndTxn);
        assert!(n >= 60, "only {n} (api, version) pairs encoded");
    }

    fn decode_everything(bytes: Bytes) -> usize {
        let len = bytes.len();
        let ((), peak) = peak_during(|| {
            if let Ok(frame) = decode_request_header(bytes) {
                let _ = decode_any(&frame);
            }
        });
        // Decoded structs may be a few times larger than their wire form, never more.
        assert!(
            peak <= 64 * len + 64 * 1024,
            "peak allocation {peak} for {len} bytes"
        );
        peak
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_frames_never_panic(
            key in prop::sample::select(versions::SUPPORTED.to_vec()),
            version in -1i16..20,
            tail in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut b = Vec::new();
            b.extend_from_slice(&key.0.to_be_bytes());
            b.extend_from_slice(&version.to_be_bytes());
            b.extend_from_slice(&1i32.to_be_bytes());
            b.extend_from_slice(&tail);
            decode_everything(Bytes::from(b));
        }

        #[test]
        fn mutated_valid_requests_never_panic(
            pick in any::<prop::sample::Index>(),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), 0u8..4, any::<u32>()),
                1..6,
            ),
        ) {
            let samples = populated_samples();
            let mut b = samples[pick.index(samples.len())].to_vec();
            for (at, kind, x) in edits {
                // Keep the 8-byte header prefix so the mutation reaches the body decoder.
                let i = 8 + at.index(b.len().saturating_sub(8).max(1));
                match kind {
                    0 if i < b.len() => b[i] ^= x as u8,
                    1 => b.truncate(i),
                    2 if i + 4 <= b.len() => b[i..i + 4].copy_from_slice(&x.to_be_bytes()),
                    _ => b.insert(i.min(b.len()), x as u8),
                }
            }
            decode_everything(Bytes::from(b));
        }
    }
}

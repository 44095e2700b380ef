//! crcbench: measures CRC-32C (Castagnoli, the Kafka record-batch checksum) throughput of the
//! `crc32c` crate on this machine, for the benchmark's physical-limits table.
//! It hashes consecutive chunks of an in-cache 1 MiB buffer (a broker checksums a batch it has just
//! read, so the data is in cache) and prints one JSON object. It never reads files or the network.
//! Usage: crcbench [TOTAL_MIB]: MiB hashed per chunk size and repetition (default 1024,
//! at most 65536).

use std::time::Instant;

/// Bytes hashed per (chunk size, repetition) unless given on the command line.
const TOTAL_MIB_DEFAULT: u64 = 1024;
/// Upper bound on the command-line figure, so a typo cannot run for hours.
const TOTAL_MIB_MAX: u64 = 65_536;
/// In-cache working buffer.
const BUF_BYTES: usize = 1 << 20;
/// Repetitions per chunk size; the median is reported.
const REPS: usize = 5;
/// Chunk sizes: one record, a small batch, a typical batch, a large batch.
const CHUNKS: [usize; 4] = [100, 1024, 16 * 1024, 1 << 20];

fn main() {
    let total_mib = std::env::args()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(TOTAL_MIB_DEFAULT)
        .clamp(1, TOTAL_MIB_MAX);
    let total = total_mib << 20;
    // Deterministic pseudo-random content (xorshift), so the figure does not depend on zeroes.
    let mut buf = vec![0u8; BUF_BYTES];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    assert_eq!(
        crc32c::crc32c(b"123456789"),
        0xe306_9283,
        "crc32c check value"
    );
    let mut out = Vec::new();
    let mut sink = 0u32;
    for &chunk in CHUNKS.iter() {
        let mut rates = Vec::with_capacity(REPS);
        for _ in 0..REPS {
            let mut done: u64 = 0;
            let mut off = 0usize;
            let t0 = Instant::now();
            while done < total {
                if off + chunk > BUF_BYTES {
                    off = 0;
                }
                sink ^= crc32c::crc32c(&buf[off..off + chunk]);
                off += chunk;
                done += chunk as u64;
            }
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            rates.push(done as f64 / secs / 1e9);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        out.push(format!(
            "\"{}\": {{\"median_gb_s\": {:.2}, \"min_gb_s\": {:.2}, \"max_gb_s\": {:.2}}}",
            chunk,
            rates[REPS / 2],
            rates[0],
            rates[REPS - 1]
        ));
    }
    println!("{{\"crc32c\": {{{}}}, \"sink\": {}}}", out.join(", "), sink);
}

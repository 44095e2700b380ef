//! gzip/snappy/lz4/zstd with bounded output (codec helper).

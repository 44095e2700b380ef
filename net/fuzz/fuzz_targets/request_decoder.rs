//! Fuzz target: one request frame body through the broker's decode path (header, body for every
//! served api key, then the batch splitter, record walker and decompressors on any records).
//! Never asserts on content; a crash, a panic escaping the codec or an abort is the finding.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use libfuzzer_sys::fuzz_target;
use samsa_net::batch::{split_batches, split_stored_batches, validate_records, BatchBounds};
use samsa_net::codec::{decode_body, decode_request_header, RequestFrame};

/// Tighter than the broker's defaults so inputs stay fast.
const BOUNDS: BatchBounds = BatchBounds {
    max_batch_bytes: 1 << 20,
    max_uncompressed_bytes: 1 << 20,
    record_count_max: 1 << 16,
};

fn walk_records(records: &[u8]) {
    let _ = split_stored_batches(records, &BOUNDS);
    if let Ok(batches) = split_batches(records, &BOUNDS) {
        for (range, header) in batches {
            let _ = validate_records(&records[range], &header, true, &BOUNDS);
        }
    }
}

fn decode(frame: &RequestFrame) {
    match ApiKey::try_from(frame.api_key) {
        Ok(ApiKey::Produce) => {
            if let Ok(req) = decode_body::<ProduceRequest>(frame) {
                for topic in &req.topic_data {
                    for p in &topic.partition_data {
                        if let Some(records) = &p.records {
                            walk_records(records);
                        }
                    }
                }
            }
        }
        Ok(ApiKey::Fetch) => drop(decode_body::<FetchRequest>(frame)),
        Ok(ApiKey::ListOffsets) => drop(decode_body::<ListOffsetsRequest>(frame)),
        Ok(ApiKey::Metadata) => drop(decode_body::<MetadataRequest>(frame)),
        Ok(ApiKey::ApiVersions) => drop(decode_body::<ApiVersionsRequest>(frame)),
        Ok(ApiKey::CreateTopics) => drop(decode_body::<CreateTopicsRequest>(frame)),
        Ok(ApiKey::DeleteTopics) => drop(decode_body::<DeleteTopicsRequest>(frame)),
        Ok(ApiKey::DeleteRecords) => drop(decode_body::<DeleteRecordsRequest>(frame)),
        Ok(ApiKey::InitProducerId) => drop(decode_body::<InitProducerIdRequest>(frame)),
        Ok(ApiKey::OffsetForLeaderEpoch) => drop(decode_body::<OffsetForLeaderEpochRequest>(frame)),
        Ok(ApiKey::DescribeConfigs) => drop(decode_body::<DescribeConfigsRequest>(frame)),
        Ok(ApiKey::AlterConfigs) => drop(decode_body::<AlterConfigsRequest>(frame)),
        Ok(ApiKey::CreatePartitions) => drop(decode_body::<CreatePartitionsRequest>(frame)),
        Ok(ApiKey::IncrementalAlterConfigs) => {
            drop(decode_body::<IncrementalAlterConfigsRequest>(frame))
        }
        Ok(ApiKey::DescribeCluster) => drop(decode_body::<DescribeClusterRequest>(frame)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match decode_request_header(Bytes::copy_from_slice(data)) {
        Ok(frame) => decode(&frame),
        Err(e) => drop(e.response()),
    }
    // The same bytes as a records blob.
    walk_records(data);
});

//! In-process node tests: `run_node` on `RealDisk` in a temp dir and real sockets on
//! 127.0.0.1:0, driven with raw Kafka frames built by the `kafka-protocol` crate.
//! Never leaves a node running: every test shuts its node down and waits for it.
//! Real files and sockets only: not built under `--cfg madsim`.
#![cfg(not(madsim))]

mod common;
use common::{start_with, test_config, Client, Running};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use samsa_net::records::{build_batch, BatchOptions, Record};
use tokio::io::AsyncWriteExt;

async fn start(dir: &std::path::Path) -> Running {
    start_with(dir, test_config(dir)).await
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create(
    c: &mut Client,
    topic: &str,
    partitions: i32,
    version: i16,
) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    c.call(ApiKey::CreateTopics, version, &req).await
}

async fn metadata(c: &mut Client, version: i16, topics: Option<&[&str]>) -> MetadataResponse {
    let topics = topics.map(|t| {
        t.iter()
            .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(name(n))))
            .collect()
    });
    let req = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(true);
    c.call(ApiKey::Metadata, version, &req).await
}

#[tokio::test]
async fn api_versions_at_every_version_and_kip511_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    for v in 0..=3 {
        let resp: ApiVersionsResponse = c
            .call(ApiKey::ApiVersions, v, &ApiVersionsRequest::default())
            .await;
        assert_eq!(resp.error_code, 0, "v{v}");
        let produce = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == 0)
            .expect("produce");
        assert_eq!((produce.min_version, produce.max_version), (3, 11));
    }
    // ApiVersions v9 (unknown): error 35 and a v0 body listing our versions.
    let mut buf = BytesMut::new();
    buf.put_i16(18);
    buf.put_i16(9);
    buf.put_i32(77);
    buf.put_i16(-1);
    c.send_raw(&buf).await;
    let mut frame = c.recv_raw().await.expect("fallback");
    assert_eq!(frame.get_i32(), 77);
    assert_eq!(frame.get_i16(), 35);
    let n = frame.get_i32();
    assert!(n >= 1, "{n} apis");
    assert_eq!(
        frame.get_i16(),
        18,
        "the fallback lists ApiVersions' own range"
    );
    node.stop().await;
}

#[tokio::test]
async fn topics_are_created_listed_and_survive_restart_with_stable_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let resp = create(&mut c, "orders", 3, 7).await;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 3);
    let id = resp.topics[0].topic_id;
    assert!(!id.is_nil());
    // Again: TOPIC_ALREADY_EXISTS; bad names: INVALID_TOPIC_EXCEPTION; RF 3: invalid.
    assert_eq!(
        create(&mut c, "orders", 3, 2).await.topics[0].error_code,
        36
    );
    assert_eq!(
        create(&mut c, "bad/name", 1, 4).await.topics[0].error_code,
        17
    );
    let rf3 = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("rf3"))
            .with_num_partitions(1)
            .with_replication_factor(3),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &rf3).await;
    assert_eq!(resp.topics[0].error_code, 38);

    for v in [0, 9, 13] {
        let md = metadata(&mut c, v, Some(&["orders"])).await;
        assert_eq!(md.topics[0].partitions.len(), 3, "metadata v{v}");
    }
    let md = metadata(&mut c, 12, Some(&["orders"])).await;
    assert_eq!(md.topics.len(), 1);
    assert_eq!(md.topics[0].topic_id, id);
    assert_eq!(md.topics[0].partitions.len(), 3);
    assert_eq!(md.brokers[0].port, i32::from(node.addr.port()));
    let cluster_id = md.cluster_id.clone().expect("cluster id");
    // Old non-flexible version (kafkajs, aiokafka) with auto-create of an unknown topic.
    let md = metadata(&mut c, 4, Some(&["auto"])).await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(
        md.topics[0].partitions.len(),
        2,
        "num_partitions from config"
    );
    let md = metadata(&mut c, 1, Some(&["..."])).await;
    assert_eq!(md.topics[0].error_code, 0, "'...' is a legal name");
    let md = metadata(&mut c, 1, Some(&[".."])).await;
    assert_eq!(md.topics[0].error_code, 17);
    node.stop().await;

    // Files of a deleted topic whose removal a crash interrupted are cleaned up at start;
    // anything not named like a partition directory is left alone.
    let ghost = dir
        .path()
        .join(format!("ghost-0.{}", uuid::Uuid::from_u128(99).simple()));
    std::fs::create_dir(&ghost).expect("mkdir");
    std::fs::write(ghost.join("00000000000000000000.log"), b"old").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"keep").expect("write");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let md = metadata(&mut c, 12, None).await;
    // (The node binds before it recovers; an answered request means recovery is done.)
    assert!(!ghost.exists(), "orphaned partition dir removed");
    assert!(dir.path().join("notes.txt").exists());
    let orders = md
        .topics
        .iter()
        .find(|t| t.name == Some(name("orders")))
        .expect("orders");
    assert_eq!(orders.topic_id, id, "topic id stable across restart");
    assert_eq!(
        md.cluster_id,
        Some(cluster_id),
        "cluster id stable across restart"
    );
    assert_eq!(md.topics.len(), 3);
    node.stop().await;
}

#[tokio::test]
async fn producer_ids_are_unique_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let node = start(dir.path()).await;
        let mut c = Client::connect(node.addr).await;
        for v in [0, 4] {
            let req = InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, v, &req).await;
            assert_eq!(resp.error_code, 0);
            assert_eq!(resp.producer_epoch, 0);
            assert!(
                !seen.contains(&resp.producer_id.0),
                "{:?} reused",
                resp.producer_id
            );
            seen.push(resp.producer_id.0);
        }
        node.stop().await;
    }
    assert_eq!(seen.len(), 4);
}

#[tokio::test]
async fn garbage_frames_close_the_connection_but_not_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let cases: Vec<Vec<u8>> = vec![
        vec![1, 2, 3],                       // shorter than a header
        vec![0x7f, 0x7f, 0, 0, 0, 0, 0, 1],  // unknown api key
        vec![0, 3, 0, 99, 0, 0, 0, 1, 0, 0], // Metadata v99
        // Metadata v1 whose topic array claims 2^31-1 entries in a 14-byte frame.
        vec![0, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff, 0xff],
    ];
    for case in cases {
        let mut c = Client::connect(node.addr).await;
        c.send_raw(&case).await;
        assert!(
            c.recv_raw().await.is_none(),
            "{case:?} should close the connection"
        );
    }
    // A frame length beyond socket_request_max_bytes closes before reading the body.
    let mut c = Client::connect(node.addr).await;
    c.stream
        .write_all(&0x7fff_ffffu32.to_be_bytes())
        .await
        .expect("write");
    assert!(c.recv_raw().await.is_none());
    // The node still serves.
    let mut c = Client::connect(node.addr).await;
    let resp: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default())
        .await;
    assert_eq!(resp.error_code, 0);
    node.stop().await;
}

fn batch(keys: &[&str], ts: i64, pid: i64, seq: i32) -> BytesMut {
    let records: Vec<Record> = keys
        .iter()
        .map(|k| Record {
            key: Some(Bytes::from(k.to_string())),
            value: Some(Bytes::from(format!("value-{k}"))),
            headers: vec![("h".to_string(), Some(Bytes::from_static(b"1")))],
            timestamp_ms: ts,
        })
        .collect();
    let options = BatchOptions {
        producer_id: pid,
        producer_epoch: if pid >= 0 { 0 } else { -1 },
        base_sequence: if pid >= 0 { seq } else { -1 },
        ..BatchOptions::default()
    };
    build_batch(&records, &options)
}

/// The batch as the broker stores it: base offset and leader epoch (0) patched in place.
fn as_stored(mut b: BytesMut, base_offset: i64) -> Bytes {
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&0i32.to_be_bytes());
    b.freeze()
}

async fn produce(c: &mut Client, v: i16, topic: &str, p: i32, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(records)),
            ])]);
    let resp: ProduceResponse = c.call(ApiKey::Produce, v, &req).await;
    let part = &resp.responses[0].partition_responses[0];
    (part.error_code, part.base_offset)
}

async fn fetch(
    c: &mut Client,
    v: i16,
    topic: &str,
    id: uuid::Uuid,
    offset: i64,
) -> (i16, i64, Bytes) {
    let mut t = fetch_request::FetchTopic::default().with_partitions(vec![
        fetch_request::FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20),
    ]);
    t = if v >= 13 {
        t.with_topic_id(id)
    } else {
        t.with_topic(name(topic))
    };
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![t]);
    let resp: FetchResponse = c.call(ApiKey::Fetch, v, &req).await;
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

async fn list_offset(c: &mut Client, topic: &str, timestamp: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp),
            ])]);
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[tokio::test]
async fn produce_fetch_byte_identical_and_again_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let id = create(&mut c, "events", 1, 7).await.topics[0].topic_id;
    let b1 = batch(&["a", "b", "c"], 1_000, -1, -1);
    let b2 = batch(&["d"], 2_000, -1, -1);
    assert_eq!(
        produce(&mut c, 9, "events", 0, b1.clone().freeze()).await,
        (0, 0)
    );
    assert_eq!(
        produce(&mut c, 3, "events", 0, b2.clone().freeze()).await,
        (0, 3)
    );
    let mut expected = BytesMut::new();
    expected.extend_from_slice(&as_stored(b1, 0));
    expected.extend_from_slice(&as_stored(b2, 3));
    let expected = expected.freeze();
    for v in [4, 11, 13, 16] {
        let (err, hw, records) = fetch(&mut c, v, "events", id, 0).await;
        assert_eq!((err, hw), (0, 4), "fetch v{v}");
        assert_eq!(records, expected, "fetch v{v} returns the stored bytes");
    }
    assert_eq!(
        fetch(&mut c, 11, "events", id, 99).await.0,
        1,
        "OFFSET_OUT_OF_RANGE"
    );
    assert_eq!(list_offset(&mut c, "events", -1).await, (0, 4));
    assert_eq!(list_offset(&mut c, "events", -2).await, (0, 0));
    assert_eq!(list_offset(&mut c, "events", 1_500).await, (0, 3));
    assert_eq!(list_offset(&mut c, "events", 9_999).await, (0, -1));
    node.stop().await;

    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let (err, hw, records) = fetch(&mut c, 11, "events", id, 0).await;
    assert_eq!((err, hw), (0, 4));
    assert_eq!(records, expected, "same bytes after restart");
    assert_eq!(
        produce(
            &mut c,
            7,
            "events",
            0,
            batch(&["e"], 3_000, -1, -1).freeze()
        )
        .await,
        (0, 4)
    );
    node.stop().await;
}

#[tokio::test]
async fn idempotent_retry_gets_its_original_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    create(&mut c, "idem", 1, 7).await;
    let init = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &init).await;
    let pid = resp.producer_id.0;
    let first = batch(&["a", "b"], 10, pid, 0).freeze();
    assert_eq!(produce(&mut c, 9, "idem", 0, first.clone()).await, (0, 0));
    assert_eq!(
        produce(&mut c, 9, "idem", 0, batch(&["c"], 11, pid, 2).freeze()).await,
        (0, 2)
    );
    // The retry of the first batch: success with its original offset, nothing appended.
    assert_eq!(produce(&mut c, 9, "idem", 0, first).await, (0, 0));
    assert_eq!(list_offset(&mut c, "idem", -1).await, (0, 3));
    // A gap in the sequence.
    let gap = produce(&mut c, 9, "idem", 0, batch(&["z"], 12, pid, 7).freeze()).await;
    assert_eq!(gap.0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    node.stop().await;
}

#[tokio::test]
async fn bad_batches_get_kafka_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    create(&mut c, "plain", 1, 7).await;
    // A compacted topic requires keys.
    let req = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("compacted"))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("cleanup.policy"))
                .with_value(Some(StrBytes::from_static_str("compact")))]),
    ]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).await;
    assert_eq!(resp.topics[0].error_code, 0);
    let keyless = build_batch(
        &[Record {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 1,
        }],
        &BatchOptions::default(),
    );
    assert_eq!(
        produce(&mut c, 9, "compacted", 0, keyless.clone().freeze())
            .await
            .0,
        87
    );
    assert_eq!(
        produce(&mut c, 9, "plain", 0, keyless.clone().freeze())
            .await
            .0,
        0
    );
    let mut bad_crc = keyless.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, 9, "plain", 0, bad_crc.freeze()).await.0,
        2,
        "CORRUPT_MESSAGE"
    );
    let mut bad_magic = keyless.clone();
    bad_magic[16] = 7;
    assert_eq!(
        produce(&mut c, 9, "plain", 0, bad_magic.freeze()).await.0,
        2
    );
    assert_eq!(
        produce(&mut c, 9, "nope", 0, keyless.clone().freeze())
            .await
            .0,
        3
    );
    let big = batch(&[&"x".repeat(2_000_000)], 1, -1, -1);
    assert_eq!(
        produce(&mut c, 9, "plain", 0, big.freeze()).await.0,
        10,
        "MESSAGE_TOO_LARGE"
    );
    // Nothing bad reached the log.
    assert_eq!(list_offset(&mut c, "plain", -1).await, (0, 1));
    node.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_on_produce_and_pipelined_responses_keep_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    let id = create(&mut c, "poll", 1, 7).await.topics[0].topic_id;
    let addr = node.addr;
    let waiter = tokio::spawn(async move {
        let mut f = Client::connect(addr).await;
        let mut t = fetch_request::FetchTopic::default().with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20),
        ]);
        t = t.with_topic_id(id);
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(30_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![t]);
        let started = tokio::time::Instant::now();
        let resp: FetchResponse = f.call(ApiKey::Fetch, 13, &req).await;
        (started.elapsed(), resp)
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "no data yet: the fetch must wait");
    // Pipelined on one connection: acks=0 produce (no response), Metadata, acks=-1 produce.
    let mut frames = Vec::new();
    for (i, acks) in [(1, 0i16), (3, -1)] {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("poll"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(&["k"], 5, -1, -1).freeze())),
                ])]);
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(7)
            .with_correlation_id(100 + i)
            .encode(&mut buf, ApiKey::Produce.request_header_version(7))
            .expect("header");
        req.encode(&mut buf, 7).expect("body");
        frames.push(buf);
        if i == 1 {
            let mut buf = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(ApiKey::Metadata as i16)
                .with_request_api_version(4)
                .with_correlation_id(102)
                .encode(&mut buf, ApiKey::Metadata.request_header_version(4))
                .expect("header");
            MetadataRequest::default()
                .with_topics(None)
                .encode(&mut buf, 4)
                .expect("body");
            frames.push(buf);
        }
    }
    for f in &frames {
        c.send_raw(f).await;
    }
    // acks=0 gets nothing, so the first answer is the Metadata (102), then the produce (103).
    for expected in [102, 103] {
        let mut frame = c.recv_raw().await.expect("response");
        assert_eq!(frame.get_i32(), expected);
    }
    let (waited, resp) = waiter.await.expect("fetch task");
    let records = resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    assert!(!records.is_empty(), "the long poll returned the new data");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "woken by the produce: {waited:?}"
    );
    node.stop().await;
}

/// ListOffsets answers at record granularity: the first *record* at or after the timestamp, and
/// for -3 (KIP-734) the record holding the largest timestamp, even inside one batch.
#[tokio::test]
async fn list_offsets_by_time_finds_the_record_inside_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut c = Client::connect(node.addr).await;
    create(&mut c, "timed", 1, 7).await;
    let records: Vec<Record> = [1_000, 1_001, 1_005, 1_002]
        .iter()
        .map(|&ts| Record {
            key: Some(Bytes::from(format!("k{ts}"))),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: ts,
        })
        .collect();
    let b = build_batch(&records, &BatchOptions::default());
    assert_eq!(produce(&mut c, 9, "timed", 0, b.freeze()).await, (0, 0));
    assert_eq!(list_offset(&mut c, "timed", 1_000).await, (0, 0));
    assert_eq!(list_offset(&mut c, "timed", 1_001).await, (0, 1));
    assert_eq!(list_offset(&mut c, "timed", 1_003).await, (0, 2));
    assert_eq!(list_offset(&mut c, "timed", -3).await, (0, 2));
    assert_eq!(list_offset(&mut c, "timed", 1_006).await, (0, -1));
    node.stop().await;
}

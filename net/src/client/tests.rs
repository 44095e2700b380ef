//! Client tests against a tiny in-process fake broker on `tokio::io::duplex`, answering from
//! frames built with kafka-protocol's encoder. The fake is scripted per Produce request (apply,
//! lose the answer, hang, fail) so each definite/ambiguous path is exercised on purpose.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::*;
use crate::compression::Compression;
use crate::records::Record;

/// What the fake does with the next Produce request.
#[derive(Clone, Copy, Debug)]
enum Step {
    Apply,
    /// Apply it but never answer (the answer is "lost").
    ApplyThenHang,
    /// Neither apply nor answer.
    Hang,
    Fail(i16),
    /// Apply and answer with the wrong correlation id.
    WrongCorrelation,
}

/// (producer id, topic, partition).
type ProducerKey = (i64, String, i32);

#[derive(Default)]
struct FakeState {
    refuse_connections: bool,
    api_versions_max: Option<i16>,
    produce_script: VecDeque<Step>,
    /// (producer id, base sequence) of every Produce received.
    produce_seen: Vec<(i64, i32)>,
    /// (topic, partition) -> stored batches (base offset patched in).
    logs: BTreeMap<(String, i32), Vec<Bytes>>,
    /// (producer id, topic, partition) -> (base sequence, record count, base offset).
    producers: BTreeMap<ProducerKey, Vec<(i32, i32, i64)>>,
    topics: BTreeMap<String, (Uuid, i32)>,
    next_producer_id: i64,
    /// Append half a batch to every fetch answer.
    truncate_fetch_tail: bool,
    /// Two brokers: node 1 at `addr()`, node 2 at `addr2()`, which leads every partition.
    /// Produce, Fetch and ListOffsets sent to node 1 get NOT_LEADER_OR_FOLLOWER.
    two_brokers: bool,
    /// The broker address each Produce and Fetch arrived at.
    data_requests_at: Vec<(ApiKey, SocketAddr)>,
}

impl FakeState {
    fn log_end_offset(&self, key: &(String, i32)) -> i64 {
        self.logs
            .get(key)
            .and_then(|b| b.last())
            .map_or(0, |b| last_offset(b) + 1)
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn last_offset(batch: &[u8]) -> i64 {
    be_i64(batch, 0) + i64::from(be_i32(batch, 23))
}

#[derive(Clone)]
struct DuplexNet {
    state: Arc<Mutex<FakeState>>,
    accepted: mpsc::UnboundedSender<(SocketAddr, DuplexStream)>,
}

impl Net for DuplexNet {
    type Stream = DuplexStream;
    type Listener = ();

    async fn bind(&self, _addr: SocketAddr) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "test net cannot listen",
        ))
    }

    fn local_addr(&self, _listener: &()) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "test net cannot listen",
        ))
    }

    async fn accept(&self, _listener: &()) -> io::Result<(DuplexStream, SocketAddr)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "test net cannot listen",
        ))
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<DuplexStream> {
        if self.state.lock().unwrap().refuse_connections {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        }
        let (client, server) = tokio::io::duplex(1 << 20);
        self.accepted
            .send((addr, server))
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "fake broker gone"))?;
        Ok(client)
    }
}

fn addr() -> SocketAddr {
    "127.0.0.1:9092".parse().unwrap()
}

fn addr2() -> SocketAddr {
    "127.0.0.2:9092".parse().unwrap()
}

/// Starts the fake broker; returns the net to hand to clients and the shared state.
fn start_fake() -> (DuplexNet, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState {
        next_producer_id: 1000,
        ..FakeState::default()
    }));
    let (tx, mut rx) = mpsc::unbounded_channel::<(SocketAddr, DuplexStream)>();
    let server_state = state.clone();
    tokio::spawn(async move {
        while let Some((at, stream)) = rx.recv().await {
            tokio::spawn(serve(stream, at, server_state.clone()));
        }
    });
    (
        DuplexNet {
            state: state.clone(),
            accepted: tx,
        },
        state,
    )
}

fn respond<T: Encodable>(api_key: ApiKey, version: i16, correlation_id: i32, body: &T) -> BytesMut {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

async fn serve(mut stream: DuplexStream, at: SocketAddr, state: Arc<Mutex<FakeState>>) {
    loop {
        let Ok(Some(frame)) = frame::read_frame(&mut stream, RESPONSE_BYTES_MAX).await else {
            return;
        };
        let mut buf = frame.freeze();
        let header = decode_request_header_from_buffer(&mut buf).unwrap();
        let key = ApiKey::try_from(header.request_api_key).unwrap();
        let version = header.request_api_version;
        let cid = header.correlation_id;
        let answer = handle(key, version, cid, buf, at, &state);
        if let Some(answer) = answer {
            if frame::write_frame(&mut stream, &answer).await.is_err() {
                return;
            }
        }
    }
}

fn handle(
    key: ApiKey,
    version: i16,
    cid: i32,
    mut body: Bytes,
    at: SocketAddr,
    state: &Arc<Mutex<FakeState>>,
) -> Option<BytesMut> {
    let mut st = state.lock().unwrap();
    if matches!(key, ApiKey::Produce | ApiKey::Fetch) {
        st.data_requests_at.push((key, at));
    }
    let not_leader = st.two_brokers && at != addr2();
    match key {
        ApiKey::ApiVersions => {
            let max = st.api_versions_max.unwrap_or(4);
            let mut response = ApiVersionsResponse::default();
            let mut answer_version = version;
            if version > max {
                // KIP-511 fallback: error 35 and a v0 body.
                response.error_code = 35;
                answer_version = 0;
            }
            response.api_keys = [(0, 0, 13), (1, 0, 17), (2, 0, 10), (3, 0, 13), (18, 0, max)]
                .into_iter()
                .chain([(19, 0, 7), (20, 0, 6), (22, 0, 5)])
                .map(|(k, lo, hi)| {
                    let mut v = ApiVersion::default();
                    v.api_key = k;
                    v.min_version = lo;
                    v.max_version = hi;
                    v
                })
                .collect();
            Some(respond(key, answer_version, cid, &response))
        }
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut body, version).unwrap();
            let mut response = MetadataResponse::default();
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = 1.into();
            broker.host = StrBytes::from_static_str("127.0.0.1");
            broker.port = 9092;
            response.brokers = vec![broker];
            if st.two_brokers {
                let mut broker = MetadataResponseBroker::default();
                broker.node_id = 2.into();
                broker.host = StrBytes::from_static_str("127.0.0.2");
                broker.port = 9092;
                response.brokers.push(broker);
            }
            let leader = if st.two_brokers { 2 } else { 1 };
            response.controller_id = 1.into();
            let wanted: Option<Vec<String>> = request.topics.map(|ts| {
                ts.iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_owned()))
                    .collect()
            });
            for (topic, (id, partitions)) in &st.topics {
                if wanted.as_ref().is_some_and(|w| !w.contains(topic)) {
                    continue;
                }
                let mut t = MetadataResponseTopic::default();
                t.name = Some(name(topic));
                t.topic_id = *id;
                t.partitions = (0..*partitions)
                    .map(|i| {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i;
                        p.leader_id = leader.into();
                        p.replica_nodes = vec![1.into()];
                        p.isr_nodes = vec![1.into()];
                        p
                    })
                    .collect();
                response.topics.push(t);
            }
            Some(respond(key, version, cid, &response))
        }
        ApiKey::CreateTopics => {
            let request = CreateTopicsRequest::decode(&mut body, version).unwrap();
            let mut response = CreateTopicsResponse::default();
            for t in request.topics {
                let topic = t.name.0.as_str().to_owned();
                let mut result = CreatableTopicResult::default();
                result.name = t.name.clone();
                if st.topics.contains_key(&topic) {
                    result.error_code = 36;
                } else {
                    let id = Uuid::from_u128(st.topics.len() as u128 + 1);
                    st.topics.insert(topic, (id, t.num_partitions));
                    result.topic_id = id;
                }
                response.topics.push(result);
            }
            Some(respond(key, version, cid, &response))
        }
        ApiKey::DeleteTopics => {
            let request = DeleteTopicsRequest::decode(&mut body, version).unwrap();
            let mut response = DeleteTopicsResponse::default();
            let names: Vec<TopicName> = if version >= 6 {
                request.topics.into_iter().filter_map(|t| t.name).collect()
            } else {
                request.topic_names
            };
            for n in names {
                let mut result = DeletableTopicResult::default();
                if st.topics.remove(n.0.as_str()).is_none() {
                    result.error_code = 3;
                }
                result.name = Some(n);
                response.responses.push(result);
            }
            Some(respond(key, version, cid, &response))
        }
        ApiKey::InitProducerId => {
            let mut response = InitProducerIdResponse::default();
            response.producer_id = st.next_producer_id.into();
            response.producer_epoch = 0;
            st.next_producer_id += 1;
            Some(respond(key, version, cid, &response))
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, version).unwrap();
            let step = st.produce_script.pop_front().unwrap_or(Step::Apply);
            let topic = &request.topic_data[0];
            let partition = &topic.partition_data[0];
            let log_key = (topic.name.0.as_str().to_owned(), partition.index);
            let batch = partition.records.clone().unwrap();
            let producer_id = be_i64(&batch, 43);
            let sequence = be_i32(&batch, 53);
            let count = be_i32(&batch, 57);
            st.produce_seen.push((producer_id, sequence));
            let mut code = 0;
            let mut base_offset = -1;
            let step = if not_leader { Step::Fail(6) } else { step };
            match step {
                Step::Hang => return None,
                Step::Fail(c) => code = c,
                Step::Apply | Step::ApplyThenHang | Step::WrongCorrelation => {
                    let pkey = (producer_id, log_key.0.clone(), log_key.1);
                    let known = st.producers.get(&pkey).cloned().unwrap_or_default();
                    if let Some(&(_, _, offset)) = known.iter().find(|(s, _, _)| *s == sequence) {
                        base_offset = offset; // A retry of an applied batch: its offset again.
                    } else if producer_id >= 0
                        && known.last().map_or(0, |(s, c, _)| s + c) != sequence
                    {
                        code = 45;
                    } else {
                        base_offset = st.log_end_offset(&log_key);
                        let mut stored = BytesMut::from(&batch[..]);
                        stored[0..8].copy_from_slice(&base_offset.to_be_bytes());
                        st.logs
                            .entry(log_key.clone())
                            .or_default()
                            .push(stored.freeze());
                        if producer_id >= 0 {
                            st.producers.entry(pkey).or_default().push((
                                sequence,
                                count,
                                base_offset,
                            ));
                        }
                    }
                }
            }
            if matches!(step, Step::ApplyThenHang) || request.acks == 0 {
                return None;
            }
            let mut p = PartitionProduceResponse::default();
            p.index = partition.index;
            p.error_code = code;
            p.base_offset = base_offset;
            p.log_append_time_ms = -1;
            let mut t = TopicProduceResponse::default();
            t.name = topic.name.clone();
            t.partition_responses = vec![p];
            let mut response = ProduceResponse::default();
            response.responses = vec![t];
            let cid = if matches!(step, Step::WrongCorrelation) {
                cid + 7
            } else {
                cid
            };
            Some(respond(key, version, cid, &response))
        }
        ApiKey::Fetch => {
            let request = FetchRequest::decode(&mut body, version).unwrap();
            let topic = &request.topics[0];
            let fp = &topic.partitions[0];
            let log_key = (topic.topic.0.as_str().to_owned(), fp.partition);
            let mut records = BytesMut::new();
            let batches = st.logs.get(&log_key).cloned().unwrap_or_default();
            for b in batches.iter().filter(|b| last_offset(b) >= fp.fetch_offset) {
                records.extend_from_slice(b);
            }
            if st.truncate_fetch_tail {
                if let Some(b) = batches.first() {
                    records.extend_from_slice(&b[..b.len() / 2]);
                }
            }
            let mut p = PartitionData::default();
            if not_leader {
                records.clear();
                p.error_code = 6;
            }
            p.partition_index = fp.partition;
            p.high_watermark = st.log_end_offset(&log_key);
            p.last_stable_offset = p.high_watermark;
            p.log_start_offset = 0;
            p.records = Some(records.freeze());
            let mut t = FetchableTopicResponse::default();
            t.topic = topic.topic.clone();
            t.partitions = vec![p];
            let mut response = FetchResponse::default();
            response.responses = vec![t];
            Some(respond(key, version, cid, &response))
        }
        ApiKey::ListOffsets => {
            let request = ListOffsetsRequest::decode(&mut body, version).unwrap();
            let topic = &request.topics[0];
            let lp = &topic.partitions[0];
            let log_key = (topic.name.0.as_str().to_owned(), lp.partition_index);
            let offset = match lp.timestamp {
                -2 => 0,
                -1 => st.log_end_offset(&log_key),
                ts => st
                    .logs
                    .get(&log_key)
                    .and_then(|bs| bs.iter().find(|b| be_i64(b, 35) >= ts))
                    .map_or(-1, |b| be_i64(b, 0)),
            };
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = lp.partition_index;
            p.offset = offset;
            p.timestamp = -1;
            let mut t = ListOffsetsTopicResponse::default();
            t.name = topic.name.clone();
            t.partitions = vec![p];
            let mut response = ListOffsetsResponse::default();
            response.topics = vec![t];
            Some(respond(key, version, cid, &response))
        }
        other => panic!("fake broker got unexpected {other:?}"),
    }
}

fn record(i: usize) -> Record {
    Record {
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!("value-{i}").repeat(i + 1))),
        headers: vec![("n".to_owned(), Some(Bytes::from(i.to_string())))],
        timestamp_ms: 1_000 + i as i64,
    }
}

fn fast_producer(idempotent: bool, retries: u32) -> ProducerConfig {
    ProducerConfig {
        idempotent,
        retries,
        request_timeout_ms: 200,
        retry_backoff_ms: 10,
        connect_timeout_ms: 200,
        ..ProducerConfig::default()
    }
}

fn fast_client() -> ClientConfig {
    ClientConfig {
        request_timeout_ms: 500,
        retry_backoff_ms: 10,
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn client_produce_then_fetch_round_trip() {
    let (net, state) = start_fake();
    let config = ProducerConfig {
        compression: Compression::Gzip,
        ..fast_producer(false, 0)
    };
    let mut producer = Producer::new(net.clone(), vec![addr()], config);
    let first = producer
        .send("t", 0, (0..3).map(record).collect())
        .await
        .unwrap();
    let second = producer
        .send("t", 0, (3..6).map(record).collect())
        .await
        .unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 3));
    assert!(first.acknowledged && second.acknowledged);
    assert!(!second.maybe_duplicated);

    state.lock().unwrap().truncate_fetch_tail = true;
    let mut consumer = Consumer::new(net, vec![addr()], fast_client());
    // Offset 1 is inside the first batch: records 0 is dropped, the partial tail ignored.
    let fetched = consumer.fetch("t", 0, 1, 100, 1 << 20).await.unwrap();
    assert_eq!(fetched.high_watermark, 6);
    assert_eq!(fetched.next_offset, 6);
    let offsets: Vec<i64> = fetched.records.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4, 5]);
    for (offset, got) in &fetched.records {
        assert_eq!(*got, record(*offset as usize));
    }
}

#[tokio::test]
async fn client_idempotent_retry_after_lost_answer_keeps_sequence() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::Apply, Step::ApplyThenHang].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(true, 3));
    let a = producer
        .send("t", 0, (0..2).map(record).collect())
        .await
        .unwrap();
    let b = producer
        .send("t", 0, (2..4).map(record).collect())
        .await
        .unwrap();
    let c = producer
        .send("t", 0, (4..5).map(record).collect())
        .await
        .unwrap();
    assert_eq!((a.base_offset, b.base_offset, c.base_offset), (0, 2, 4));
    assert_eq!(producer.producer_id_and_epoch(), (1000, 0));
    let st = state.lock().unwrap();
    // The lost answer made the client resend batch b with the same sequence.
    assert_eq!(
        st.produce_seen,
        vec![(1000, 0), (1000, 2), (1000, 2), (1000, 4)]
    );
    assert_eq!(
        st.logs[&("t".to_owned(), 0)].len(),
        3,
        "the retry was not appended twice"
    );
}

#[tokio::test]
async fn client_timeout_is_ambiguous() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::Hang].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 0));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert_eq!(
        err,
        ClientError::Timeout {
            api_key: ApiKey::Produce as i16
        }
    );
    assert!(!err.is_definite());
}

#[tokio::test]
async fn client_broker_error_is_definite_and_not_retried() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::Fail(code::MESSAGE_TOO_LARGE)].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 3));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(err.is_definite(), "{err}");
    assert_eq!(err.error_code(), Some(code::MESSAGE_TOO_LARGE));
    assert_eq!(state.lock().unwrap().produce_seen.len(), 1);
}

#[tokio::test]
async fn client_unknown_broker_code_is_ambiguous() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::Fail(code::KAFKA_STORAGE_ERROR)].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 0));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(!err.is_definite(), "{err}");
}

#[tokio::test]
async fn client_definite_after_ambiguous_is_unresolved() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script =
        [Step::Hang, Step::Fail(code::OUT_OF_ORDER_SEQUENCE_NUMBER)].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(true, 1));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(matches!(err, ClientError::Unresolved { .. }), "{err}");
    assert!(!err.is_definite());
    assert_eq!(err.error_code(), Some(code::OUT_OF_ORDER_SEQUENCE_NUMBER));
    // The sequence state is unknown now: the next batch goes out under a new producer id.
    producer.send("t", 0, vec![record(1)]).await.unwrap();
    assert_eq!(producer.producer_id_and_epoch(), (1001, 0));
    assert_eq!(state.lock().unwrap().produce_seen.last(), Some(&(1001, 0)));
}

#[tokio::test]
async fn client_non_idempotent_retry_may_duplicate() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::ApplyThenHang].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 2));
    let ok = producer.send("t", 0, vec![record(0)]).await.unwrap();
    assert!(ok.maybe_duplicated);
    assert_eq!(ok.base_offset, 1);
    assert_eq!(state.lock().unwrap().logs[&("t".to_owned(), 0)].len(), 2);
}

#[tokio::test]
async fn client_idempotence_without_acks_is_refused() {
    let (net, state) = start_fake();
    let config = ProducerConfig {
        acks: 0,
        ..fast_producer(true, 0)
    };
    let mut producer = Producer::new(net, vec![addr()], config);
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidInput { .. }) && err.is_definite(),
        "{err}"
    );
    assert!(state.lock().unwrap().produce_seen.is_empty());
}

#[tokio::test]
async fn client_follows_the_leader_named_by_metadata() {
    let (net, state) = start_fake();
    state.lock().unwrap().two_brokers = true;
    let mut admin = Admin::new(net.clone(), vec![addr()], fast_client());
    admin.create_topics("t", 1, vec![]).await.unwrap();
    let mut producer = Producer::new(net.clone(), vec![addr()], fast_producer(true, 2));
    let first = producer.send("t", 0, vec![record(0)]).await.unwrap();
    let second = producer.send("t", 0, vec![record(1)]).await.unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 1));
    let mut consumer = Consumer::new(net, vec![addr()], fast_client());
    let fetched = consumer.fetch("t", 0, 0, 10, 1 << 20).await.unwrap();
    assert_eq!(fetched.records.len(), 2);
    let st = state.lock().unwrap();
    // Each client asks the bootstrap broker once, learns node 2 leads, and stays there.
    let expected = vec![
        (ApiKey::Produce, addr()),
        (ApiKey::Produce, addr2()),
        (ApiKey::Produce, addr2()),
        (ApiKey::Fetch, addr()),
        (ApiKey::Fetch, addr2()),
    ];
    assert_eq!(st.data_requests_at, expected);
    assert_eq!(st.produce_seen, vec![(1000, 0), (1000, 0), (1000, 1)]);
}

#[tokio::test]
async fn client_connect_refused_is_definite() {
    let (net, state) = start_fake();
    state.lock().unwrap().refuse_connections = true;
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 2));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.is_definite());
    assert!(state.lock().unwrap().produce_seen.is_empty());
}

#[tokio::test]
async fn client_wrong_correlation_id_is_ambiguous() {
    let (net, state) = start_fake();
    state.lock().unwrap().produce_script = [Step::WrongCorrelation].into();
    let mut producer = Producer::new(net, vec![addr()], fast_producer(false, 0));
    let err = producer.send("t", 0, vec![record(0)]).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
    assert!(!err.is_definite());
}

#[tokio::test]
async fn client_acks_zero_gets_no_offset() {
    let (net, state) = start_fake();
    let config = ProducerConfig {
        acks: 0,
        ..fast_producer(false, 0)
    };
    let mut producer = Producer::new(net.clone(), vec![addr()], config);
    let ok = producer.send("t", 0, vec![record(0)]).await.unwrap();
    assert!(!ok.acknowledged);
    assert_eq!(ok.base_offset, -1);
    // The same connection carries on: the next request's answer is matched correctly.
    let mut consumer = Consumer::new(net, vec![addr()], fast_client());
    let latest = consumer.list_offsets("t", 0, -1).await.unwrap();
    assert_eq!(latest.offset, 1);
    assert_eq!(state.lock().unwrap().produce_seen.len(), 1);
}

#[tokio::test]
async fn client_admin_create_metadata_delete() {
    let (net, _state) = start_fake();
    let mut admin = Admin::new(net, vec![addr()], fast_client());
    let id = admin
        .create_topics("orders", 3, vec![("retention.ms".into(), "-1".into())])
        .await;
    let id = id.unwrap();
    assert_ne!(id, Uuid::nil());
    let again = admin.create_topics("orders", 3, vec![]).await.unwrap_err();
    assert_eq!(again.error_code(), Some(code::TOPIC_ALREADY_EXISTS));
    assert!(again.is_definite());

    let metadata = admin.metadata(Some(vec!["orders".into()])).await.unwrap();
    assert_eq!(
        metadata.brokers,
        vec![BrokerInfo {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9092
        }]
    );
    let topic = metadata.topic("orders").unwrap();
    assert_eq!(topic.topic_id, id);
    assert_eq!(topic.partitions.len(), 3);
    assert!(topic.partitions.iter().all(|p| p.leader_id == 1));

    admin.delete_topics(vec!["orders".into()]).await.unwrap();
    assert!(admin.metadata(None).await.unwrap().topics.is_empty());
    let gone = admin
        .delete_topics(vec!["orders".into()])
        .await
        .unwrap_err();
    assert_eq!(gone.error_code(), Some(code::UNKNOWN_TOPIC_OR_PARTITION));
}

#[tokio::test]
async fn client_list_offsets_after_kip511_fallback() {
    let (net, state) = start_fake();
    state.lock().unwrap().api_versions_max = Some(2);
    let mut producer = Producer::new(net.clone(), vec![addr()], fast_producer(false, 0));
    producer
        .send("t", 0, (0..2).map(record).collect())
        .await
        .unwrap();
    producer
        .send("t", 0, (5..7).map(record).collect())
        .await
        .unwrap();
    let mut consumer = Consumer::new(net, vec![addr()], fast_client());
    assert_eq!(consumer.list_offsets("t", 0, -2).await.unwrap().offset, 0);
    assert_eq!(consumer.list_offsets("t", 0, -1).await.unwrap().offset, 4);
    // Batch 2 holds timestamps 1005..1006.
    assert_eq!(
        consumer.list_offsets("t", 0, 1_003).await.unwrap().offset,
        2
    );
}

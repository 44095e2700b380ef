//! Property test: random and half-valid request frames thrown at the dispatcher of a real broker
//! (RealDisk in a temp dir) never panic it, and every answer is either a response frame carrying
//! the request's correlation id, nothing, or a closed connection.
//! Real files only: not built under `--cfg madsim`.
#![cfg(not(madsim))]

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use samsa_broker::broker::Broker;
use samsa_broker::handlers::{dispatch, ConnState, Reply};
use samsa_broker::NodeConfig;
use samsa_net::{Hooks, SystemClock};
use samsa_storage::RealDisk;

struct Fixture {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker<RealDisk, SystemClock>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let cfg = NodeConfig {
            data_dir: dir.path().display().to_string(),
            ..Default::default()
        };
        let disk = RealDisk::new(dir.path()).expect("disk");
        let bound = "127.0.0.1:9092".parse().expect("addr");
        let broker = rt
            .block_on(Broker::open(
                cfg,
                disk,
                SystemClock,
                Hooks::default(),
                bound,
            ))
            .expect("broker");
        rt.block_on(broker.create_topic("fuzz", 2, Default::default()))
            .expect("topic");
        Fixture {
            rt,
            broker,
            _dir: dir,
        }
    })
}

fn run(frame: Vec<u8>) -> Option<Bytes> {
    let f = fixture();
    f.rt.block_on(async {
        let mut conn = ConnState::default();
        match dispatch(&f.broker, Bytes::from(frame), &mut conn).await {
            Reply::Now(b) => b.map(BytesMut::freeze),
            // A long poll may legitimately wait up to its max_wait; give up on it quickly.
            Reply::Later(fut) => {
                let limited = tokio::time::timeout(std::time::Duration::from_millis(50), fut);
                limited.await.ok().flatten().map(BytesMut::freeze)
            }
            Reply::Close => None,
        }
    })
}

/// Served (key, version) pairs, so half the cases get past the header into the body decoders.
fn served() -> impl Strategy<Value = (i16, i16)> {
    let pairs: Vec<(i16, i16)> = samsa_net::versions::SUPPORTED
        .iter()
        .flat_map(|&(k, lo, hi)| (lo..=hi).map(move |v| (k, v)))
        .collect();
    proptest::sample::select(pairs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = run(frame);
    }

    #[test]
    fn random_bodies_of_served_apis_never_panic(
        (key, version) in served(),
        correlation_id in any::<i32>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut frame = BytesMut::new();
        frame.put_i16(key);
        frame.put_i16(version);
        frame.put_i32(correlation_id);
        frame.put_i16(-1); // null client id
        frame.put_slice(&body);
        if let Some(resp) = run(frame.to_vec()) {
            prop_assert!(resp.len() >= 4);
            let answered = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
            prop_assert_eq!(answered, correlation_id);
        }
    }
}

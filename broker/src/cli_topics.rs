//! `samsa topics describe [TOPIC]`: per partition, the log start and end offsets, the segment
//! count, the cleanup policy and, for compacted topics, the cleaner's progress (first dirty
//! offset = everything below was cleaned, dirty ratio, clean and dirty bytes, cleanable end).
//! Offline: it opens the data directory the way the broker does (so recovery runs) and must only
//! be used while the broker is stopped. Per-pass figures (bytes read / written, time) are not
//! stored; a running broker logs them as `cleaner pass` lines. Never creates or deletes a topic
//! and never cleans anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, Subcommand};
use samsa_broker::broker::Broker;
use samsa_broker::partition::Partition;
use samsa_broker::NodeConfig;
use samsa_net::{Clock, Hooks, SystemClock};
use samsa_storage::{Disk, RealDisk};

/// Partitions one describe prints (bounds the output and the work).
const DESCRIBE_PARTITIONS_MAX: usize = 100_000;

#[derive(Args, Debug)]
#[command(
    after_help = "Reads the data directory offline: stop the broker first (opening the \
data directory runs recovery). Cleaner passes are logged by a running broker as `cleaner pass` \
lines with bytes_read, bytes_written and elapsed_ms."
)]
pub struct TopicsArgs {
    /// The broker's data directory.
    #[arg(long, value_name = "DIR", default_value = "./samsa-data")]
    pub data_dir: String,
    #[command(subcommand)]
    pub command: TopicsCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Partitions, offsets, segments, cleanup policy and cleaner progress (all topics when no
    /// TOPIC is named).
    Describe { topic: Option<String> },
}

pub async fn run(args: TopicsArgs) -> Result<(), String> {
    let TopicsCommand::Describe { topic } = args.command;
    let disk = RealDisk::new(&args.data_dir).map_err(|e| format!("data dir: {e}"))?;
    let cfg = NodeConfig {
        data_dir: args.data_dir.clone(),
        ..NodeConfig::default()
    };
    let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
    let broker = Broker::open(cfg, disk.clone(), SystemClock, Hooks::default(), unbound)
        .await
        .map_err(|e| format!("cannot open {}: {e}", args.data_dir))?;
    let result = describe(&broker, &disk, topic.as_deref()).await;
    broker.close().await;
    let text = result?;
    print!("{text}");
    Ok(())
}

async fn describe(
    broker: &Arc<Broker<RealDisk, SystemClock>>,
    disk: &RealDisk,
    only: Option<&str>,
) -> Result<String, String> {
    let mut by_topic: BTreeMap<String, Vec<Arc<Partition<RealDisk>>>> = BTreeMap::new();
    for p in broker
        .all_partitions()
        .into_iter()
        .take(DESCRIBE_PARTITIONS_MAX)
    {
        if only.is_none_or(|t| t == p.topic) {
            by_topic.entry(p.topic.clone()).or_default().push(p);
        }
    }
    if let Some(t) = only.filter(|_| by_topic.is_empty()) {
        return Err(format!("topic {t} does not exist"));
    }
    let now = broker.clock.now_ms();
    let mut out = String::new();
    for (name, mut parts) in by_topic {
        parts.sort_by_key(|p| p.index);
        let config = parts[0].config();
        let policy = match (config.compact, config.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        };
        out.push_str(&format!(
            "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tcleanup.policy={policy}\t\
             segment.bytes={}\tsegment.ms={}\n",
            parts[0].topic_id,
            parts.len(),
            config.segment_bytes,
            config.segment_ms
        ));
        for p in parts {
            let segments = disk
                .list(&p.dir)
                .await
                .map(|names| names.iter().filter(|n| n.ends_with(".log")).count())
                .map_or_else(|e| format!("? ({e})"), |n| n.to_string());
            out.push_str(&format!(
                "\tPartition: {}\tLogStartOffset: {}\tLogEndOffset: {}\tSegments: {segments}\n",
                p.index,
                p.log_start_offset().await,
                p.high_watermark(),
            ));
            if !config.compact {
                continue;
            }
            match p.dirty_info(now).await {
                Ok(info) => out.push_str(&format!(
                    "\t\tCleaner: FirstDirtyOffset: {}\tDirtyRatio: {:.3} (min {:.3})\t\
                     CleanBytes: {}\tDirtyBytes: {}\tCleanableEndOffset: {}\n",
                    info.first_dirty_offset,
                    info.dirty_ratio(),
                    config.min_cleanable_dirty_ratio(),
                    info.clean_bytes,
                    info.dirty_bytes,
                    info.cleanable_end_offset
                )),
                Err(e) => out.push_str(&format!("\t\tCleaner: unavailable ({e})\n")),
            }
        }
    }
    Ok(out)
}

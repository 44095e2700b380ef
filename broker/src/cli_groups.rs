//! `samsa groups`: list groups, describe one (members, assignments, committed offsets, lag per
//! partition = high watermark - committed) and reset a group's offsets (to earliest, latest, an
//! offset or a time; only while the group is empty, as Kafka's consumer-groups tool), through
//! samsa-net's client. Output columns follow Kafka's `kafka-consumer-groups.sh`.
//! Never touches the data directory and never changes anything without `--execute`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::{Args, Subcommand};
use samsa_net::client::{Admin, ClientConfig, Consumer, GroupConfig, GroupMember};
use samsa_net::TokioNet;

/// Partitions one reset may touch.
const RESET_PARTITIONS_MAX: usize = 100_000;

#[derive(Args, Debug)]
pub struct GroupsArgs {
    /// Broker to talk to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[command(subcommand)]
    pub command: GroupsCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List every consumer group with its state.
    List,
    /// Members, assignments, committed offsets and lag of one group.
    Describe { group: String },
    /// Reset the committed offsets of an empty group on one topic.
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    pub group: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long, group = "to")]
    pub to_earliest: bool,
    #[arg(long, group = "to")]
    pub to_latest: bool,
    #[arg(long, group = "to", value_name = "N")]
    pub to_offset: Option<i64>,
    /// First offset whose timestamp is at or after this time (ms since the epoch).
    #[arg(long, group = "to", value_name = "MS")]
    pub to_datetime: Option<i64>,
    /// Apply the plan (without it the plan is only printed, as Kafka's tool does).
    #[arg(long)]
    pub execute: bool,
}

fn client_config() -> ClientConfig {
    ClientConfig {
        client_id: "samsa-groups".to_string(),
        ..ClientConfig::default()
    }
}

fn member(addr: SocketAddr, group: &str) -> GroupMember<TokioNet> {
    let config = GroupConfig {
        group: group.to_string(),
        topics: Vec::new(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
    };
    GroupMember::new(TokioNet, vec![addr], client_config(), config)
}

/// Runs one `samsa groups` command; the text goes to stdout, errors come back as a message.
pub async fn run(args: GroupsArgs) -> Result<(), String> {
    let addr: SocketAddr = args
        .bootstrap
        .parse()
        .map_err(|e| format!("--bootstrap {}: {e}", args.bootstrap))?;
    match args.command {
        GroupsCommand::List => list(addr).await,
        GroupsCommand::Describe { group } => describe(addr, &group).await,
        GroupsCommand::ResetOffsets(r) => reset(addr, r).await,
    }
}

async fn list(addr: SocketAddr) -> Result<(), String> {
    let groups = member(addr, "")
        .list_groups()
        .await
        .map_err(|e| format!("ListGroups: {e}"))?;
    println!("{:<40} {:<20} STATE", "GROUP", "PROTOCOL-TYPE");
    for g in groups {
        println!("{:<40} {:<20} {}", g.group, g.protocol_type, g.state);
    }
    Ok(())
}

/// High watermark per (topic, partition), for the lag column.
async fn end_offsets(
    addr: SocketAddr,
    partitions: impl Iterator<Item = (String, i32)>,
) -> BTreeMap<(String, i32), i64> {
    let mut consumer = Consumer::new(TokioNet, vec![addr], client_config());
    let mut out = BTreeMap::new();
    for (t, p) in partitions {
        if let Ok(ok) = consumer.list_offsets(&t, p, -1).await {
            out.insert((t, p), ok.offset);
        }
    }
    out
}

/// Describes `group`: one line per partition that is assigned or has a committed offset.
async fn describe(addr: SocketAddr, group: &str) -> Result<(), String> {
    let mut m = member(addr, group);
    let d = m
        .describe()
        .await
        .map_err(|e| format!("DescribeGroups: {e}"))?;
    let committed = m
        .fetch_all_offsets()
        .await
        .map_err(|e| format!("OffsetFetch: {e}"))?;
    // (topic, partition) -> (committed, owner index into members)
    let mut rows: BTreeMap<(String, i32), (Option<i64>, Option<usize>)> = BTreeMap::new();
    for (t, p, o) in committed {
        rows.entry((t, p)).or_default().0 = Some(o);
    }
    for (i, mem) in d.members.iter().enumerate() {
        for tp in &mem.partitions {
            rows.entry(tp.clone()).or_default().1 = Some(i);
        }
    }
    let ends = end_offsets(addr, rows.keys().cloned()).await;
    println!(
        "\nGroup '{group}' state {} ({} members, protocol {} {})\n",
        d.state,
        d.members.len(),
        d.protocol_type,
        d.protocol
    );
    println!(
        "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    );
    let dash = || "-".to_string();
    for ((t, p), (committed, owner)) in &rows {
        let end = ends.get(&(t.clone(), *p)).copied();
        let lag = match (committed, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => dash(),
        };
        let owner = owner.and_then(|i| d.members.get(i));
        println!(
            "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} {}",
            group,
            t,
            p,
            committed.map_or_else(dash, |c| c.to_string()),
            end.map_or_else(dash, |e| e.to_string()),
            lag,
            owner.map_or_else(dash, |m| m.member_id.clone()),
            owner.map_or_else(dash, |m| m.client_host.clone()),
            owner.map_or_else(dash, |m| m.client_id.clone()),
        );
    }
    let idle: Vec<_> = d
        .members
        .iter()
        .filter(|m| m.partitions.is_empty())
        .collect();
    for m in idle {
        println!(
            "{:<20} {:<20} {:>9} {:>14} {:>14} {:>8} {:<40} {:<16} {}",
            group, "-", "-", "-", "-", "-", m.member_id, m.client_host, m.client_id
        );
    }
    Ok(())
}

/// The target offset of one partition for a reset.
async fn target(
    consumer: &mut Consumer<TokioNet>,
    r: &ResetArgs,
    partition: i32,
) -> Result<i64, String> {
    let (earliest, latest) = (
        consumer
            .list_offsets(&r.topic, partition, -2)
            .await
            .map_err(|e| format!("ListOffsets: {e}"))?
            .offset,
        consumer
            .list_offsets(&r.topic, partition, -1)
            .await
            .map_err(|e| format!("ListOffsets: {e}"))?
            .offset,
    );
    let wanted = if r.to_earliest {
        earliest
    } else if r.to_latest {
        latest
    } else if let Some(o) = r.to_offset {
        o
    } else if let Some(ts) = r.to_datetime {
        let found = consumer
            .list_offsets(&r.topic, partition, ts)
            .await
            .map_err(|e| format!("ListOffsets: {e}"))?
            .offset;
        // No record at or after the time: the end, as Kafka's tool does.
        if found < 0 {
            latest
        } else {
            found
        }
    } else {
        return Err("choose one of --to-earliest, --to-latest, --to-offset, --to-datetime".into());
    };
    // Kafka clamps an out-of-range target into [earliest, latest].
    Ok(wanted.clamp(earliest, latest.max(earliest)))
}

async fn reset(addr: SocketAddr, r: ResetArgs) -> Result<(), String> {
    let mut m = member(addr, &r.group);
    match m.describe().await {
        Ok(d) if !d.members.is_empty() || !matches!(d.state.as_str(), "Empty" | "Dead") => {
            return Err(format!(
                "assignments can only be reset if the group '{}' is inactive, but the current \
                 state is {}",
                r.group, d.state
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("DescribeGroups: {e}")),
    }
    let mut admin = Admin::new(TokioNet, vec![addr], client_config());
    let meta = admin
        .metadata(Some(vec![r.topic.clone()]))
        .await
        .map_err(|e| format!("Metadata: {e}"))?;
    let Some(topic) = meta
        .topics
        .iter()
        .find(|t| t.name == r.topic && t.error_code == 0)
    else {
        return Err(format!("topic {} does not exist", r.topic));
    };
    let partitions: Vec<i32> = topic
        .partitions
        .iter()
        .map(|p| p.partition)
        .take(RESET_PARTITIONS_MAX)
        .collect();
    let mut consumer = Consumer::new(TokioNet, vec![addr], client_config());
    let mut plan = Vec::new();
    for p in &partitions {
        plan.push((*p, target(&mut consumer, &r, *p).await?));
    }
    println!(
        "\n{:<20} {:<20} {:>9} NEW-OFFSET",
        "GROUP", "TOPIC", "PARTITION"
    );
    for (p, o) in &plan {
        println!("{:<20} {:<20} {:>9} {}", r.group, r.topic, p, o);
    }
    if !r.execute {
        println!("\n(dry run: add --execute to apply)");
        return Ok(());
    }
    // A "simple" commit (generation -1, no member id): accepted only while the group is empty.
    m.commit(-1, &r.topic, &plan)
        .await
        .map_err(|e| format!("OffsetCommit: {e}"))
}

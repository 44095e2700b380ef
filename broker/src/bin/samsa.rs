//! The `samsa` command-line entry point: `samsa broker` runs one node on real files, sockets and
//! the system clock until SIGINT/SIGTERM, then shuts down cleanly; `samsa groups` lists,
//! describes and resets consumer groups through the client; `samsa topics describe` shows
//! partitions, offsets, segments and cleaner progress from a stopped broker's data directory.
//! The one place allowed to draw a seed from outside (OS entropy): a production run need not
//! replay. Never compiled into simulation logic: under `--cfg madsim` it only explains itself.

#[cfg(madsim)]
fn main() {
    eprintln!("samsa: this is a simulation build; use samsa-sim");
}

#[cfg(not(madsim))]
#[path = "../cli_groups.rs"]
mod cli_groups;

#[cfg(not(madsim))]
#[path = "../cli_topics.rs"]
mod cli_topics;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use clap::{Args, Parser, Subcommand};
    use samsa_broker::{run_node, NodeConfig};
    use samsa_net::{Clock, Hooks, SystemClock, TokioNet};
    use samsa_storage::{Disk, DiskError, OpenMode, RealDisk};

    /// Samsa: a Kafka-compatible event log.
    #[derive(Parser, Debug)]
    #[command(name = "samsa", version, about)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        /// Run a broker node (a single node without --voters; with --voters, a member of a
        /// cluster's metadata quorum). Flags override the config file, which overrides the
        /// embedded defaults.
        Broker(Box<BrokerArgs>),
        /// Consumer groups: list, describe (offsets and lag), reset-offsets.
        Groups(crate::cli_groups::GroupsArgs),
        /// Topics (offline, broker stopped): partitions, offsets, segments, cleaner progress.
        Topics(crate::cli_topics::TopicsArgs),
        /// Give a data directory its metadata-quorum directory id before the node first starts
        /// and print it (32 hex digits) for the voters list, `ID@HOST:PORT:DIRID`: a voter whose
        /// entry pins the id votes and leads only with that directory, so a node restarted on
        /// an empty disk follows as an observer instead of voting again as its old self. A
        /// directory that has an id already keeps it and prints it.
        Format(FormatArgs),
    }

    #[derive(Args, Debug)]
    struct FormatArgs {
        /// The node's data directory (created if missing).
        #[arg(long, value_name = "DIR", default_value = "./samsa-data")]
        data_dir: String,
    }

    #[derive(Args, Debug)]
    struct BrokerArgs {
        /// TOML config file (keys as in NodeConfig: node_id, listen, data_dir, log_level,
        /// num_partitions, flush_policy, retention_ms, ...). Unknown keys are errors.
        #[arg(long, value_name = "FILE")]
        config: Option<String>,
        /// Address to listen on [default: 127.0.0.1:9092]; port 0 picks a free port.
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Address given to clients in Metadata [default: the bound address].
        #[arg(long, value_name = "HOST:PORT")]
        advertised_listen: Option<String>,
        /// Directory for the metadata and partition logs [default: ./samsa-data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<String>,
        /// Node id [default: 1].
        #[arg(long, value_name = "N")]
        node_id: Option<i32>,
        /// Log level: error, warn, info, debug, trace [default: info]. RUST_LOG overrides.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
        /// Partitions of auto-created topics [default: 1].
        #[arg(long, value_name = "N")]
        num_partitions: Option<i32>,
        /// Create unknown topics on Metadata requests [default: true].
        #[arg(long, value_name = "BOOL")]
        auto_create_topics_enable: Option<bool>,
        /// When acks=1/-1 produce is answered: fsync (after the sync; default), interval
        /// (every flush_interval_ms; may lose that window on power loss) or none (page cache;
        /// may lose what the OS had not written).
        #[arg(long, value_name = "POLICY")]
        flush_policy: Option<String>,
        /// Sync interval for flush_policy=interval [default: 1000].
        #[arg(long, value_name = "MS")]
        flush_interval_ms: Option<i64>,
        /// Default segment size in bytes [default: 1073741824].
        #[arg(long, value_name = "BYTES")]
        segment_bytes: Option<i64>,
        /// Default retention in ms, -1 = forever [default: 604800000 = 7 days].
        #[arg(long, value_name = "MS")]
        retention_ms: Option<i64>,
        /// Default retention in bytes per partition, -1 = no limit [default: -1].
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<i64>,
        /// Largest request frame accepted [default: 104857600].
        #[arg(long, value_name = "BYTES")]
        socket_request_max_bytes: Option<usize>,
        /// Largest record batch accepted [default: 1048588].
        #[arg(long, value_name = "BYTES")]
        message_max_bytes: Option<i32>,
        /// Cluster mode: the metadata quorum's voters, ID@HOST:PORT,... (controller addresses);
        /// ID@HOST:PORT:DIRID pins a voter's directory id (`samsa format` prints it). Without
        /// it the node is a single node, its own controller [default: unset].
        #[arg(long, value_name = "ID@HOST:PORT[:DIRID],...")]
        voters: Option<String>,
        /// Cluster mode: where this node's quorum listener binds [default: its voters entry].
        #[arg(long, value_name = "HOST:PORT")]
        controller_listen: Option<String>,
        /// Cluster mode: broker,controller (default) or controller.
        #[arg(long, value_name = "ROLES")]
        process_roles: Option<String>,
        /// Seed for ids the node generates [default: drawn from OS entropy].
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
    }

    /// Config files larger than this are refused (they are read whole).
    const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

    /// Reads the config file through `RealDisk` (the one file-system seam), rooted at the file's
    /// directory; the broker library never reads it.
    async fn read_config_file(path: &str) -> Result<String, String> {
        let p = Path::new(path);
        if !p.is_file() {
            return Err(format!(
                "config file {path} does not exist or is not a file"
            ));
        }
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("bad config file name")?;
        let fail = |e: DiskError| format!("cannot read config file {path}: {e}");
        let disk = RealDisk::new(dir).map_err(fail)?;
        let file = disk.open(name, OpenMode::Existing).await.map_err(fail)?;
        let len = disk.len(&file).await.map_err(fail)?;
        if len > CONFIG_FILE_BYTES_MAX {
            return Err(format!(
                "config file {path} is larger than {CONFIG_FILE_BYTES_MAX} bytes"
            ));
        }
        let mut buf = vec![0u8; len as usize];
        let n = disk.read_at(&file, 0, &mut buf).await.map_err(fail)?;
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| format!("config file {path} is not UTF-8"))
    }

    async fn load(args: &BrokerArgs) -> Result<NodeConfig, String> {
        let mut cfg = match &args.config {
            Some(path) => {
                let text = read_config_file(path).await?;
                NodeConfig::from_toml(&text).map_err(|e| format!("{path}: {e}"))?
            }
            None => NodeConfig::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &args.$f { cfg.$f = v.clone(); } )* };
        }
        over!(
            listen,
            data_dir,
            node_id,
            log_level,
            num_partitions,
            auto_create_topics_enable
        );
        over!(
            flush_policy,
            flush_interval_ms,
            segment_bytes,
            retention_ms,
            retention_bytes
        );
        over!(socket_request_max_bytes, message_max_bytes);
        if let Some(a) = &args.advertised_listen {
            cfg.advertised_listen = Some(a.clone());
        }
        if let Some(v) = &args.voters {
            cfg.voters = Some(v.clone());
        }
        if let Some(c) = &args.controller_listen {
            cfg.controller_listen = Some(c.clone());
        }
        over!(process_roles);
        cfg.seed = match args.seed {
            Some(seed) => seed,
            None if args.config.is_some() && cfg.seed != 0 => cfg.seed,
            None => entropy_seed(),
        };
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// A seed from outside the program: std's per-process random hasher keys (OS entropy),
    /// mixed with the pid and the system clock. Allowed here only: this is the production
    /// binary, and a production run does not need to replay.
    fn entropy_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_i64(SystemClock.now_ms());
        h.finish()
    }

    async fn shutdown_signal() {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }

    /// The one-thread runtime of the short-lived subcommands; `None` after saying why not.
    fn small_runtime() -> Option<tokio::runtime::Runtime> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                eprintln!("samsa: cannot start the runtime: {e}");
                None
            }
        }
    }

    fn format(args: FormatArgs) -> ExitCode {
        use samsa_broker::cluster_mode::QUORUM_DIR;
        use samsa_broker::quorum::{fresh_directory_id, QuorumStore};
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        let opened = runtime.block_on(async {
            let disk = RealDisk::new(&args.data_dir).map_err(|e| e.to_string())?;
            QuorumStore::open(disk, QUORUM_DIR, fresh_directory_id(entropy_seed()))
                .await
                .map_err(|e| e.to_string())
        });
        match opened {
            Ok((_, loaded)) => match loaded.directory_id {
                Some(id) => {
                    if !loaded.fresh {
                        eprintln!("samsa format: {} has a directory id already", args.data_dir);
                    }
                    println!("{:032x}", id.0);
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("samsa format: {}: no directory id", args.data_dir);
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("samsa format: {}: {e}", args.data_dir);
                ExitCode::FAILURE
            }
        }
    }

    fn groups(args: crate::cli_groups::GroupsArgs) -> ExitCode {
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        match runtime.block_on(crate::cli_groups::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("samsa groups: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn topics(args: crate::cli_topics::TopicsArgs) -> ExitCode {
        let Some(runtime) = small_runtime() else {
            return ExitCode::FAILURE;
        };
        match runtime.block_on(crate::cli_topics::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("samsa topics: {e}");
                ExitCode::FAILURE
            }
        }
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let args = match cli.command {
            Command::Broker(args) => args,
            Command::Groups(args) => return groups(args),
            Command::Topics(args) => return topics(args),
            Command::Format(args) => return format(args),
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("samsa: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let cfg = match runtime.block_on(load(&args)) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("samsa: {e}");
                return ExitCode::from(2);
            }
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
        let result = runtime.block_on(async move {
            let disk = RealDisk::new(&cfg.data_dir).map_err(|e| format!("data dir: {e}"))?;
            run_node(
                cfg,
                disk,
                SystemClock,
                TokioNet,
                Hooks::default(),
                shutdown_signal(),
            )
            .await
            .map_err(|e| e.to_string())
        });
        // Every partition is synced by now; do not wait on idle blocking-pool threads.
        runtime.shutdown_timeout(std::time::Duration::from_millis(500));
        let _ = std::io::stdout().flush();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("samsa: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

//! Per-topic configuration: Kafka's dotted config names, their defaults (taken from the node
//! config), validation of user-supplied values, and the typed view the partition log uses.
//! Pure data; never touches the disk or the network.

use std::collections::BTreeMap;
use std::fmt;

/// When a produce with acks=1/-1 is answered, and what a power failure can take back.
///
/// - `Fsync` (default): answered only after the batch's bytes are fsynced. One sync serves every
///   request that arrived before it started (group commit). Nothing acknowledged is lost.
/// - `Interval`: fsync every `flush.interval.ms`; answered at once. A power failure loses up to
///   that window of acknowledged records.
/// - `None`: page cache only, like Kafka's default; synced at segment roll and clean shutdown.
///   A power failure loses whatever the OS had not yet written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    Fsync,
    Interval,
    None,
}

impl FlushPolicy {
    pub fn parse(s: &str) -> Option<FlushPolicy> {
        match s {
            "fsync" => Some(FlushPolicy::Fsync),
            "interval" => Some(FlushPolicy::Interval),
            "none" => Some(FlushPolicy::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlushPolicy::Fsync => "fsync",
            FlushPolicy::Interval => "interval",
            FlushPolicy::None => "none",
        }
    }
}

/// The typed values a partition needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub segment_bytes: i64,
    pub segment_ms: i64,
    /// -1 keeps forever.
    pub retention_ms: i64,
    /// -1 = no size limit.
    pub retention_bytes: i64,
    pub flush_policy: FlushPolicy,
    pub flush_interval_ms: i64,
    /// True for `LogAppendTime`.
    pub log_append_time: bool,
    /// True when `cleanup.policy` contains `compact` (records need keys).
    pub compact: bool,
    /// True when `cleanup.policy` contains `delete` (time / size retention applies).
    pub delete: bool,
    pub max_message_bytes: i64,
    /// `min.cleanable.dirty.ratio` in millionths (0..=1_000_000).
    pub min_cleanable_dirty_ratio_ppm: i64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
}

impl TopicConfig {
    /// `min.cleanable.dirty.ratio` as a fraction.
    pub fn min_cleanable_dirty_ratio(&self) -> f64 {
        self.min_cleanable_dirty_ratio_ppm as f64 / RATIO_PPM as f64
    }
}

/// Millionths in 1 (`min.cleanable.dirty.ratio` is kept as an integer so configs stay `Eq`).
pub const RATIO_PPM: i64 = 1_000_000;

/// Kafka's defaults for the cleaner configs, used when the node config names none.
pub const CLEANER_DEFAULTS: &[(&str, &str)] = &[
    ("delete.retention.ms", "86400000"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
];

/// Kafka topic configs Samsa accepts, validates and reports but that change nothing, with
/// Kafka's defaults (used when the node config names none):
/// - `file.delete.delay.ms`: Kafka renames a deleted segment to `.deleted` and removes the file
///   this long after; Samsa removes segment files at once, so the value has no effect. Clients
///   set it when creating topics (librdkafka's 0077_compaction), so it must not be refused.
pub const NO_EFFECT_DEFAULTS: &[(&str, &str)] = &[("file.delete.delay.ms", "60000")];

/// Parses a ratio in [0, 1] (a decimal like `0.5`) into millionths.
pub fn parse_ratio_ppm(value: &str) -> Option<i64> {
    let v: f64 = value.trim().parse().ok()?;
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    Some((v * RATIO_PPM as f64).round() as i64)
}

/// The smallest segment size accepted (Kafka's floor is 14 bytes; ours leaves room for a batch).
pub const SEGMENT_BYTES_MIN: i64 = 1024;
/// The largest segment size accepted (segment positions are 32-bit in the indexes).
pub const SEGMENT_BYTES_MAX: i64 = i32::MAX as i64;
/// Bounds on how many config entries one topic may carry (untrusted input from CreateTopics).
pub const TOPIC_CONFIG_ENTRIES_MAX: usize = 64;
/// Bound on one config value's length.
pub const TOPIC_CONFIG_VALUE_BYTES_MAX: usize = 1024;

/// A config value rejected with a reason (mapped to INVALID_CONFIG by handlers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The topic config names we understand, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.interval.ms",
    "flush.policy",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Defaults for every topic, from the node config: `name -> value` for every known name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDefaults {
    values: BTreeMap<String, String>,
}

impl TopicDefaults {
    pub fn new(mut values: BTreeMap<String, String>) -> Result<TopicDefaults, ConfigError> {
        for (name, value) in CLEANER_DEFAULTS.iter().chain(NO_EFFECT_DEFAULTS) {
            values
                .entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
        for name in TOPIC_CONFIG_NAMES {
            let Some(value) = values.get(*name) else {
                return Err(ConfigError(format!("no default for topic config {name}")));
            };
            validate_entry(name, value)?;
        }
        Ok(TopicDefaults { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `(name, value, is_default)` for every known name, with `overrides` applied.
    pub fn describe(&self, overrides: &BTreeMap<String, String>) -> Vec<(String, String, bool)> {
        TOPIC_CONFIG_NAMES
            .iter()
            .map(|name| match overrides.get(*name) {
                Some(v) => (name.to_string(), v.clone(), false),
                None => (name.to_string(), self.values[*name].clone(), true),
            })
            .collect()
    }

    /// The typed config of a topic whose overrides were validated when stored.
    pub fn resolve(&self, overrides: &BTreeMap<String, String>) -> TopicConfig {
        let get = |name: &str| -> &str {
            overrides
                .get(name)
                .map(String::as_str)
                .unwrap_or_else(|| &self.values[name])
        };
        let int = |name: &str| get(name).parse::<i64>().unwrap_or(-1);
        TopicConfig {
            segment_bytes: int("segment.bytes"),
            segment_ms: int("segment.ms"),
            retention_ms: int("retention.ms"),
            retention_bytes: int("retention.bytes"),
            flush_policy: FlushPolicy::parse(get("flush.policy")).unwrap_or(FlushPolicy::Fsync),
            flush_interval_ms: int("flush.interval.ms"),
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            compact: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            delete: get("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "delete"),
            max_message_bytes: int("max.message.bytes"),
            min_cleanable_dirty_ratio_ppm: parse_ratio_ppm(get("min.cleanable.dirty.ratio"))
                .unwrap_or(RATIO_PPM / 2),
            min_compaction_lag_ms: int("min.compaction.lag.ms").max(0),
            max_compaction_lag_ms: get("max.compaction.lag.ms").parse().unwrap_or(i64::MAX),
            delete_retention_ms: int("delete.retention.ms").max(0),
        }
    }
}

/// Validates a whole override map (CreateTopics, AlterConfigs).
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    if overrides.len() > TOPIC_CONFIG_ENTRIES_MAX {
        return Err(ConfigError(format!(
            "too many config entries: {} > {TOPIC_CONFIG_ENTRIES_MAX}",
            overrides.len()
        )));
    }
    for (name, value) in overrides {
        validate_entry(name, value)?;
    }
    Ok(())
}

fn int_in(name: &str, value: &str, min: i64, max: i64) -> Result<(), ConfigError> {
    match value.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err(ConfigError(format!(
            "invalid value {value:?} for {name}: expected an integer in [{min}, {max}]"
        ))),
    }
}

/// Validates one `name = value` pair.
pub fn validate_entry(name: &str, value: &str) -> Result<(), ConfigError> {
    if value.len() > TOPIC_CONFIG_VALUE_BYTES_MAX {
        return Err(ConfigError(format!("value of {name} is too long")));
    }
    match name {
        "segment.bytes" => int_in(name, value, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX),
        "segment.ms" => int_in(name, value, 1, i64::MAX),
        "retention.ms" | "retention.bytes" => int_in(name, value, -1, i64::MAX),
        "flush.interval.ms" => int_in(name, value, 1, i64::MAX),
        "max.message.bytes" => int_in(name, value, 0, i32::MAX as i64),
        "min.insync.replicas" => int_in(name, value, 1, 1),
        "delete.retention.ms" | "min.compaction.lag.ms" | "file.delete.delay.ms" => {
            int_in(name, value, 0, i64::MAX)
        }
        "max.compaction.lag.ms" => int_in(name, value, 1, i64::MAX),
        "min.cleanable.dirty.ratio" => match parse_ratio_ppm(value) {
            Some(_) => Ok(()),
            None => Err(ConfigError(format!(
                "invalid value {value:?} for min.cleanable.dirty.ratio: expected a number in \
                 [0, 1]"
            ))),
        },
        "flush.policy" => match FlushPolicy::parse(value) {
            Some(_) => Ok(()),
            None => Err(ConfigError(format!(
                "invalid value {value:?} for flush.policy: expected fsync, interval or none"
            ))),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(ConfigError(format!(
                "invalid value {value:?} for message.timestamp.type: \
                 expected CreateTime or LogAppendTime"
            ))),
        },
        "cleanup.policy" => {
            let ok = value
                .split(',')
                .all(|p| matches!(p.trim(), "delete" | "compact"));
            if ok && !value.is_empty() {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "invalid value {value:?} for cleanup.policy: expected delete and/or compact"
                )))
            }
        }
        "compression.type" => match value {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => {
                if value == "producer" {
                    Ok(())
                } else {
                    // Recompression on the broker is not implemented; say so rather than lie.
                    Err(ConfigError(format!(
                        "compression.type={value} is not supported yet: only producer"
                    )))
                }
            }
            _ => Err(ConfigError(format!(
                "invalid value {value:?} for compression.type"
            ))),
        },
        _ => Err(ConfigError(format!("unknown topic config {name:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("flush.interval.ms", "1000"),
            ("flush.policy", "fsync"),
            ("max.message.bytes", "1048588"),
            ("message.timestamp.type", "CreateTime"),
            ("min.insync.replicas", "1"),
            ("retention.bytes", "-1"),
            ("retention.ms", "604800000"),
            ("segment.bytes", "1073741824"),
            ("segment.ms", "604800000"),
        ] {
            m.insert(k.to_string(), v.to_string());
        }
        TopicDefaults::new(m).expect("valid defaults")
    }

    #[test]
    fn overrides_apply_and_are_flagged_non_default() {
        let d = defaults();
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        validate_overrides(&o).expect("valid");
        let c = d.resolve(&o);
        assert!(c.compact);
        assert!(c.log_append_time);
        assert_eq!(c.flush_policy, FlushPolicy::Fsync);
        assert_eq!(c.retention_ms, 604_800_000);
        let described = d.describe(&o);
        assert_eq!(described.len(), TOPIC_CONFIG_NAMES.len());
        assert!(described
            .iter()
            .any(|(n, v, def)| n == "cleanup.policy" && v == "compact" && !def));
        assert!(described
            .iter()
            .any(|(n, _, def)| n == "segment.bytes" && *def));
    }

    #[test]
    fn bad_values_and_names_are_rejected() {
        assert!(validate_entry("segment.bytes", "12").is_err());
        assert!(validate_entry("retention.ms", "-2").is_err());
        assert!(validate_entry("retention.ms", "-1").is_ok());
        assert!(validate_entry("flush.policy", "sometimes").is_err());
        assert!(validate_entry("no.such.config", "1").is_err());
        assert!(validate_entry("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_entry("cleanup.policy", "").is_err());
        assert!(validate_entry("min.cleanable.dirty.ratio", "0.01").is_ok());
        assert!(validate_entry("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_entry("min.cleanable.dirty.ratio", "x").is_err());
        assert!(validate_entry("delete.retention.ms", "-1").is_err());
        assert!(validate_entry("max.compaction.lag.ms", "0").is_err());
    }

    #[test]
    fn cleaner_configs_default_to_kafkas_and_resolve() {
        let d = defaults();
        let c = d.resolve(&BTreeMap::new());
        assert_eq!(c.min_cleanable_dirty_ratio_ppm, 500_000);
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(
            (c.min_compaction_lag_ms, c.max_compaction_lag_ms),
            (0, i64::MAX)
        );
        assert!(c.delete && !c.compact);
        let o = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
        ]);
        let c = d.resolve(&o);
        assert!(c.compact && !c.delete);
        assert_eq!(c.min_cleanable_dirty_ratio_ppm, 10_000);
        assert!((c.min_cleanable_dirty_ratio() - 0.01).abs() < 1e-9);
    }

    #[test]
    fn file_delete_delay_is_accepted_validated_and_described() {
        assert!(validate_entry("file.delete.delay.ms", "0").is_ok());
        assert!(validate_entry("file.delete.delay.ms", "9223372036854775807").is_ok());
        assert!(validate_entry("file.delete.delay.ms", "-1").is_err());
        assert!(validate_entry("file.delete.delay.ms", "soon").is_err());
        assert!(validate_entry("file.delete.delay.ms", "9223372036854775808").is_err());
        let d = defaults();
        assert_eq!(d.get("file.delete.delay.ms"), Some("60000"));
        let described = d.describe(&BTreeMap::new());
        assert!(described
            .iter()
            .any(|(n, v, def)| n == "file.delete.delay.ms" && v == "60000" && *def));
        // As librdkafka's 0077_compaction creates its topic: accepted, reported as set, and the
        // typed config (what the log acts on) is the same as without it.
        let o = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("file.delete.delay.ms".to_string(), "10000".to_string()),
        ]);
        validate_overrides(&o).expect("valid");
        let described = d.describe(&o);
        assert!(described
            .iter()
            .any(|(n, v, def)| n == "file.delete.delay.ms" && v == "10000" && !*def));
        let without = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        assert_eq!(d.resolve(&o), d.resolve(&without));
        // A node config may set its own default; a bad one is refused at startup.
        let mut m = BTreeMap::from([("file.delete.delay.ms".to_string(), "-5".to_string())]);
        for name in TOPIC_CONFIG_NAMES {
            if let Some(v) = d.get(name) {
                m.entry(name.to_string()).or_insert_with(|| v.to_string());
            }
        }
        assert!(TopicDefaults::new(m).is_err());
    }
}

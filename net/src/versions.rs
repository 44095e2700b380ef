//! The API versions this broker serves and advertises in ApiVersions (codec helper).
//! One table, capped to what kafka-protocol 0.18 models (a test enforces it). Floors are where
//! record-batch v2 starts (Produce v3, Fetch v4); old non-flexible versions stay in, because
//! kafkajs and aiokafka never use flexible versions. Never allocates except in
//! `api_versions_response`.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// `(api key, min version, max version)` for every API the broker serves. Add group APIs here.
pub const SUPPORTED: &[(i16, i16, i16)] = &[
    (ApiKey::Produce as i16, 3, 11),
    (ApiKey::Fetch as i16, 4, 16),
    // v10 (KIP-1075) only adds a request timeout for tiered storage; kafka-python infers a
    // 4.0 broker from it.
    (ApiKey::ListOffsets as i16, 1, 10),
    (ApiKey::Metadata as i16, 0, 13),
    (ApiKey::ApiVersions as i16, 0, 4),
    (ApiKey::CreateTopics as i16, 2, 7),
    (ApiKey::DeleteTopics as i16, 1, 6),
    (ApiKey::DeleteRecords as i16, 0, 2),
    (ApiKey::InitProducerId as i16, 0, 5),
    (ApiKey::OffsetForLeaderEpoch as i16, 2, 4),
    (ApiKey::DescribeConfigs as i16, 1, 4),
    (ApiKey::AlterConfigs as i16, 0, 2),
    (ApiKey::CreatePartitions as i16, 0, 3),
    (ApiKey::IncrementalAlterConfigs as i16, 0, 1),
    (ApiKey::DescribeCluster as i16, 0, 1),
    // Cluster mode (broker/src/cluster_mode.rs): the metadata quorum, and the registration and
    // heartbeat our brokers send to the active controller's client listener.
    (ApiKey::DescribeQuorum as i16, 0, 2),
    (ApiKey::BrokerRegistration as i16, 0, 4),
    (ApiKey::BrokerHeartbeat as i16, 0, 1),
    // The ISR changes partition leaders propose to the active controller (replication.rs).
    (ApiKey::AlterPartition as i16, 2, 3),
    // Single-node answers: this node leads and holds everything (broker/src/handlers/admin.rs).
    (ApiKey::DescribeTopicPartitions as i16, 0, 0),
    (ApiKey::ElectLeaders as i16, 0, 2),
    (ApiKey::ListPartitionReassignments as i16, 0, 0),
    (ApiKey::AlterPartitionReassignments as i16, 0, 0),
    (ApiKey::DescribeLogDirs as i16, 1, 4),
    (ApiKey::AlterReplicaLogDirs as i16, 1, 2),
    // Consumer groups, classic protocol (broker/src/group).
    (ApiKey::FindCoordinator as i16, 0, 4),
    (ApiKey::JoinGroup as i16, 0, 9),
    (ApiKey::SyncGroup as i16, 0, 5),
    (ApiKey::Heartbeat as i16, 0, 4),
    (ApiKey::LeaveGroup as i16, 0, 5),
    (ApiKey::OffsetCommit as i16, 2, 9),
    (ApiKey::OffsetFetch as i16, 1, 9),
    (ApiKey::OffsetDelete as i16, 0, 0),
    (ApiKey::DescribeGroups as i16, 0, 5),
    (ApiKey::ListGroups as i16, 0, 5),
    (ApiKey::DeleteGroups as i16, 0, 2),
    // Consumer groups, KIP-848 protocol.
    (ApiKey::ConsumerGroupHeartbeat as i16, 0, 1),
    (ApiKey::ConsumerGroupDescribe as i16, 0, 1),
];

/// The ApiVersions range, used by the KIP-511 fallback body.
pub const API_VERSIONS_MIN: i16 = 0;
/// See `API_VERSIONS_MIN`.
pub const API_VERSIONS_MAX: i16 = 4;

/// `(min, max)` served for `api_key`, or `None` if the broker does not serve it.
pub fn supported(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|&&(k, _, _)| k == api_key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// True if `api_key` is served at `api_version`.
pub fn is_supported(api_key: i16, api_version: i16) -> bool {
    supported(api_key).is_some_and(|(lo, hi)| lo <= api_version && api_version <= hi)
}

/// The `api_keys` list of an ApiVersions response, in table order.
pub fn api_version_entries() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect()
}

/// A complete ApiVersions response advertising `SUPPORTED` with `error_code`.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_version_entries())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every advertised range lies inside what kafka-protocol can decode and encode.
    #[test]
    fn every_entry_within_crate_range() {
        let mut seen = BTreeSet::new();
        for &(k, lo, hi) in SUPPORTED {
            assert!(seen.insert(k), "api key {k} listed twice");
            let key = ApiKey::try_from(k).expect("known api key");
            let crate_range = key.valid_versions();
            assert!(lo <= hi, "{key:?}: {lo} > {hi}");
            assert!(
                crate_range.min <= lo && hi <= crate_range.max,
                "{key:?} {lo}-{hi}"
            );
        }
        assert_eq!(
            supported(ApiKey::ApiVersions as i16),
            Some((API_VERSIONS_MIN, API_VERSIONS_MAX))
        );
    }

    #[test]
    fn lookups() {
        assert_eq!(supported(ApiKey::Produce as i16), Some((3, 11)));
        assert_eq!(supported(ApiKey::JoinGroup as i16), Some((0, 9)));
        assert_eq!(supported(ApiKey::ListOffsets as i16), Some((1, 10)));
        assert_eq!(supported(ApiKey::ShareGroupHeartbeat as i16), None);
        assert_eq!(supported(-5), None);
        assert!(is_supported(0, 3));
        assert!(!is_supported(0, 2));
        assert!(!is_supported(0, 12));
        let r = api_versions_response(0);
        assert_eq!(r.api_keys.len(), SUPPORTED.len());
    }
}

//! samsa-storage: the `Disk` boundary, its real file implementation, and the on-disk formats of a
//! partition log (segments, offset and time indexes, checkpoints), recovery and retention.
//! Knows nothing of replication or groups; never calls `std::fs` outside `disk::real`.

pub mod disk;
pub mod log;

#[cfg(not(madsim))]
pub use disk::real::RealDisk;
pub use disk::{Disk, DiskError, OpenMode};
pub use log::{
    execute_flush, AppendInfo, FlushPlan, LogConfig, LogError, PartitionLog, ReadResult,
    RecoveryReport, TimestampType,
};

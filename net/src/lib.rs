//! samsa-net: everything between untrusted bytes and typed Kafka messages, plus the runtime seams
//! (`Net`, `Clock`, `Hooks`) that let the same broker run on tokio or inside the simulator.
//! Never panics on input bytes; never allocates from an untrusted length before checking a bound.

pub mod batch;
pub mod client;
pub mod clock;
pub mod codec;
pub mod compression;
pub mod error;
pub mod frame;
pub mod hooks;
pub mod io;
pub mod records;
pub mod versions;
pub mod watch;

pub use clock::{Clock, SystemClock};
pub use hooks::{HookSink, Hooks};
pub use io::{Net, TokioNet};

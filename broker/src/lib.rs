//! samsa-broker: the broker's sans-IO cores, the node shell that runs them against a `Disk`,
//! `Net` and `Clock`, the Kafka request handlers, and the `samsa` binary.
//! Never reads a clock or randomness except through the `Clock` and seed it is handed.

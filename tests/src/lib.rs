//! samsa-tests: real-binary tests on loopback, codec golden vectors and property tests, and the
//! tidy test that enforces the workspace's bans.

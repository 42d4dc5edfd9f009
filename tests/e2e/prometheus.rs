//! Contract tests of the Prometheus source against the real Prometheus of the local cluster.

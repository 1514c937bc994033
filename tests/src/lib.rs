//! End-to-end support for DIBOP: the DMS simulator (also used by `dibop dev`)
//! and the harness that starts the real binaries as processes.

pub mod dms_sim;
pub mod harness;

//! End-to-end support for DIBOP: the harness that starts the real binaries
//! as processes, and the DMS simulator (its own crate, `dibop-dms-sim`,
//! re-exported here for the tests).

pub use dibop_dms_sim as dms_sim;
pub mod harness;

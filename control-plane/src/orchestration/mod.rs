//! Orchestrations: the definition and its validation ([`definition`]),
//! schedules ([`cron`], [`scheduler`]) and the durable engine that runs
//! executions ([`engine`]).

pub mod cron;
pub mod definition;
pub mod engine;
pub mod scheduler;

//! The DIBOP control plane: the cloud service that agents dial into.
//!
//! Layers, arrows pointing down only (see `docs/architecture.md`):
//!
//! - [`app`]: settings, the shared services ([`Core`]), start-up and tasks;
//!   [`config`] reads flags, environment and file into [`Settings`];
//!   [`dev`] runs the whole platform on one machine;
//! - [`http`]: the HTTP API (`/api/v1`), the only module that knows axum;
//! - contexts, each with its own model and errors: [`identity`] (tenants,
//!   users, tokens, roles, audit), [`catalogue`] (connectors, lifecycle,
//!   publishing), [`connections`] (the one call path, health, call log),
//!   [`orchestration`] (definitions, scheduler, engine), [`cdm`], [`expr`],
//!   [`quotas`], [`agents`] (tunnel server, registry, dispatch, CA),
//!   [`vault`];
//! - [`store`]: persistent state in SQL (SQLite by default, PostgreSQL);
//! - [`support`]: ids, caches, time, metrics.

pub mod agents;
pub mod app;
pub mod catalogue;
pub mod cdm;
pub mod config;
pub mod connections;
pub mod console;
#[cfg(feature = "dev-sim")]
pub mod dev;
pub mod domain;
pub mod expr;
pub mod http;
pub mod identity;
pub mod orchestration;
pub mod quotas;
pub mod store;
pub mod support;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod vault;

pub use app::{
    Core, MAX_RESPONSE_BYTES, ResolvedSettings, Server, Settings, bootstrap_platform_admin,
    bootstrap_tenant, bootstrap_user, open_store, set_tenant_plan, start,
};

//! The connector catalogue: the connector definition and its validation
//! ([`connector`]), versions and their lifecycle ([`lifecycle`]), publishing
//! ([`publishing`]), OpenAPI import ([`import`]) and the built-in connectors
//! ([`builtin`]).

pub mod builtin;
pub mod connector;
pub mod import;
pub mod lifecycle;
pub mod publishing;

//! The gateway's whole contract with the extension: every `oauth.*` call it makes, with typed
//! arguments and typed answers (`api`), concurrent refreshes coalesced into one call (`batch`), the pool and how database failures become OAuth errors
//! (`pool`), the revocation feed (`feed`), scheduled cleanup's session (`cleanup`) and the administrator's calls of the CLI (`admin`).
//! No SQL text lives outside this module.

pub mod admin;
mod api;
mod assertion_grants;
mod batch;
pub mod cleanup;
pub mod feed;
mod pool;
mod sessions;
mod upstream_tokens;

pub use api::*;
pub use assertion_grants::IssuerKeysToFetch;
pub use batch::{ExchangeBatcher, RefreshBatcher, RefreshBatching};
pub use pool::Db;
pub use sessions::{NewSession, NextStep, Session, StartedSession, UserSession};
pub use upstream_tokens::SealedTokenSet;

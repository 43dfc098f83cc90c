//! Rules the extension decides that the gateway must also apply before it touches the network.
//!
//! The extension calls these through `#[pg_extern]` wrappers, so a rule's SQL answer and the
//! gateway's pre-check are the same code; the gateway links this crate without PostgreSQL.

pub mod assertion_grant;
pub mod client_assertion;
pub mod client_id;
pub mod dpop;

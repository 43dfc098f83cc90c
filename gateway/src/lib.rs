//! oauth-gateway: the OAuth 2.1 / OpenID Connect HTTP surface of oauth_provider.
//!
//! Each request becomes one call of an `oauth.*` SQL function (the extension holds every
//! protocol decision and all state); the gateway parses HTTP, signs JWTs and answers. Any number
//! of gateways can serve one database.

pub mod app;
mod budget;
pub mod cimd;
mod client_keys;
pub mod config;
pub mod db;
pub mod dpop;
mod endpoints;
pub mod error;
mod guard;
pub mod http;
pub mod jwt;
pub mod keyring;
pub mod keys;
mod ops;
mod outbound;
pub mod server;
pub mod tokens;
pub mod upstream;
pub mod views;

pub use config::Config;
pub use jwt::{Expectations, VerifyError, verify_access_token};
pub use server::{ServerHandle, build, serve};

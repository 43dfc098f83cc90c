//! Shared harness for the extension's integration tests: real connections to a real PostgreSQL.

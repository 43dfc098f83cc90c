-- oauth_provider 0.3.0 → 0.4.0. Every row stays; tokens, codes and secrets issued by 0.3.0 keep
-- working. Each section below is one change, with every function it touches written in full (the
-- same text as sql/*.sql), so that an updated database equals a fresh 0.4.0 install.

\echo Use "ALTER EXTENSION oauth_provider UPDATE TO '0.4.0'" to load this file. \quit

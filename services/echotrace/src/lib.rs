//! # echotrace
//!
//! The services around [`echotrace_core`]: the Kafka consumer ([`ingest`]), the sinks ([`sinks`]:
//! Parquet, Kafka), the HTTP API and metrics ([`http`], [`metrics`]), and the modes of the binary:
//! `run` (a real cluster), `demo` ([`demo`]: an in-process cluster and a bundled stream) and `replay`
//! ([`replay`]: a file). Every mode drives the same [`pipeline::Pipeline`]. `query` and `serve-sql`
//! ([`query`]) read what they wrote, `compact` ([`compact`]) merges its small files, and `backtest`
//! ([`backtest`]) runs a candidate rules file beside the configured one over the same history.
//! [`access`] decides who may call the HTTP API and Flight SQL; [`explorer`] is the web page on the
//! API that shows cascades and alerts and records analysts' decisions.

pub mod access;
pub mod alerting;
pub mod backtest;
pub mod cli;
pub mod compact;
pub mod config;
pub mod demo;
pub mod embed;
pub mod explorer;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod replay;
pub mod run;
pub mod shutdown;
pub mod sinks;
pub mod stages;
pub mod state;

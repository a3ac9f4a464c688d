//! Scoring: cascade features over sliding windows of event time ([`features`]), rules over them
//! ([`rules`]), the alert lifecycle ([`alerts`]), and the circuit breaker on paging ([`breaker`]).

pub mod alerts;
pub mod breaker;
pub mod features;
pub mod rules;

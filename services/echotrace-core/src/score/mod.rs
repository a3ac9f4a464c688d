//! Scoring: cascade features over sliding windows of event time ([`features`]), rules over them
//! ([`rules`]), and the alert lifecycle ([`alerts`]).

pub mod alerts;
pub mod features;
pub mod rules;

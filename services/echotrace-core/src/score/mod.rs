//! Scoring: cascade features over sliding windows of event time ([`features`]), rules over them
//! ([`rules`]), the alert lifecycle ([`alerts`]) split into a router ([`router`]), owners of
//! cascades ([`owner`]) and the paging gate ([`gate`]), and the circuit breaker on paging ([`breaker`]).

pub mod alerts;
pub mod breaker;
pub mod features;
pub mod gate;
pub mod owner;
pub mod router;
pub mod rules;

use crate::detector::Detection;
use crate::stage::Stage;
use alerts::{AlertEvent, ScoreConfig, Scorer, ScorerState};
use features::PostSignals;
use rules::RuleSet;

/// What configures the scorer: its rules and its windows and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerConfig {
    /// The rules in force.
    pub rules: RuleSet,
    /// Windows, bounds and the paging limit.
    pub score: ScoreConfig,
}

/// One detection for the scorer, with the signals of its post ([`PostSignals::of`]).
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// What the detector made of the post.
    pub detection: &'a Detection,
    /// What the post says of its author.
    pub signals: &'a PostSignals,
}

/// What the scorer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScorerStats {
    /// Cascades forgotten before their history ran out because the scorer kept its most.
    pub forgotten_early: u64,
    /// Cascades whose activity is kept.
    pub tracked_cascades: usize,
}

impl Stage for Scorer {
    type Config = ScorerConfig;
    type Input<'a> = Scored<'a>;
    type Output = Vec<AlertEvent>;
    type State = ScorerState;
    type Metrics = ScorerStats;

    fn empty(config: &ScorerConfig) -> Scorer {
        Scorer::new(config.rules.clone(), &config.score)
    }

    /// [`Scorer::observe`] for each detection in order; the scorer's clock and sweeps run on
    /// event time, so `threads` is not used.
    fn process(&mut self, batch: Vec<Scored<'_>>, _threads: usize) -> Vec<Vec<AlertEvent>> {
        batch.into_iter().map(|scored| self.observe(scored.detection, scored.signals)).collect()
    }

    fn state(&self) -> &ScorerState {
        Scorer::state(self)
    }

    fn restore(config: &ScorerConfig, state: ScorerState) -> Scorer {
        let mut scorer = Scorer::new(config.rules.clone(), &config.score);
        scorer.resume(state);
        scorer
    }

    fn metrics(&self) -> ScorerStats {
        ScorerStats { forgotten_early: self.forgotten_early(), tracked_cascades: self.tracked_cascades() }
    }
}

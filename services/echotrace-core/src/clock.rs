//! The stream's event-time clock: how far event time has come, which decides what the window
//! evicts and when the scorer resolves alerts.
//!
//! `created_at` is written by the platforms, and the people echotrace watches choose what many of
//! them accept (scheduled and backdated posts, skewed clocks, hostile connectors). Were the clock
//! the newest `created_at` seen, one post dated a day ahead would evict the whole window and
//! resolve every open alert. So a post moves the clock at most to its message's arrival time (the
//! Kafka timestamp, written by the ingestion side) plus `max_lead`; a post dated further ahead is
//! processed and stored with its own time and counted as ahead. Posts read without an arrival
//! time (`replay` of a file) move the clock to their own time: a file is the analyst's input.
//!
//! A post older than the clock by more than the allowed lateness is late: it is still linked
//! to what the window holds and stored, and counted.

use serde::{Deserialize, Serialize};

/// Where a post stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeliness {
    /// Within the allowed lateness, and not ahead of its arrival by more than the lead.
    OnTime,
    /// Older than the clock by more than the allowed lateness.
    Late,
    /// Dated ahead of its arrival by more than the lead: the clock moved only to arrival + lead.
    Ahead,
}

/// The event-time clock (milliseconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventClock {
    now_ms: i64,
    max_lead_ms: i64,
    allowed_lateness_ms: i64,
}

impl EventClock {
    /// A clock that has seen nothing; posts may lead their arrival by `max_lead_ms` and trail the
    /// clock by `allowed_lateness_ms`.
    pub fn new(max_lead_ms: i64, allowed_lateness_ms: i64) -> EventClock {
        EventClock { now_ms: i64::MIN, max_lead_ms, allowed_lateness_ms }
    }

    /// Event time now: the furthest any post has moved the clock; `i64::MIN` before the first.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Moves the clock for a post created at `created_at_ms` whose message arrived at
    /// `arrived_at_ms`, if known; says where the post stands (judged before it moved the clock).
    pub fn observe(&mut self, created_at_ms: i64, arrived_at_ms: Option<i64>) -> Timeliness {
        let late = self.now_ms != i64::MIN && created_at_ms < self.now_ms.saturating_sub(self.allowed_lateness_ms);
        let ceiling = arrived_at_ms.map_or(i64::MAX, |arrived| arrived.saturating_add(self.max_lead_ms));
        self.now_ms = self.now_ms.max(created_at_ms.min(ceiling));
        if created_at_ms > ceiling {
            Timeliness::Ahead
        } else if late {
            Timeliness::Late
        } else {
            Timeliness::OnTime
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MINUTE;

    #[test]
    fn a_post_dated_ahead_of_its_arrival_moves_the_clock_only_to_arrival_plus_the_lead() {
        let mut clock = EventClock::new(5 * MINUTE, 60 * MINUTE);
        assert_eq!(clock.observe(0, Some(0)), Timeliness::OnTime);
        assert_eq!(clock.observe(DAY, Some(MINUTE)), Timeliness::Ahead);
        assert_eq!(clock.now_ms(), 6 * MINUTE);
        // The stream goes on as if the post had not been there.
        assert_eq!(clock.observe(2 * MINUTE, Some(2 * MINUTE)), Timeliness::OnTime);
        assert_eq!(clock.now_ms(), 6 * MINUTE);
        // Within the lead, a post moves the clock to its own time.
        assert_eq!(clock.observe(10 * MINUTE, Some(7 * MINUTE)), Timeliness::OnTime);
        assert_eq!(clock.now_ms(), 10 * MINUTE);
    }

    #[test]
    fn posts_without_an_arrival_time_move_the_clock_to_their_own() {
        let mut clock = EventClock::new(5 * MINUTE, 60 * MINUTE);
        assert_eq!(clock.observe(DAY, None), Timeliness::OnTime);
        assert_eq!(clock.now_ms(), DAY);
    }

    #[test]
    fn a_post_older_than_the_allowed_lateness_is_late_and_leaves_the_clock() {
        let mut clock = EventClock::new(5 * MINUTE, 60 * MINUTE);
        clock.observe(120 * MINUTE, None);
        assert_eq!(clock.observe(60 * MINUTE, None), Timeliness::OnTime, "exactly the allowed lateness");
        assert_eq!(clock.observe(59 * MINUTE, None), Timeliness::Late);
        assert_eq!(clock.now_ms(), 120 * MINUTE);
    }
}

//! A hybrid logical clock (HLC) whose wall time is always passed in, never read.
//!
//! A [`Timestamp`] is `(wall_ms, counter)`: milliseconds since the Unix epoch and a logical counter
//! that orders events within one millisecond. [`HybridClock::tick`] stamps a local event;
//! [`HybridClock::observe`] folds in a timestamp received from a peer, refusing one further ahead
//! of local time than the allowed skew (the caller holds such a value back until local time
//! reaches it; it is never dropped). All arithmetic is checked or saturating, so hostile input
//! (`u64::MAX` and friends) cannot overflow it.

use crate::error::ClockError;

/// The default bound on how far ahead of local time a peer's timestamp may be: 10 minutes.
pub const DEFAULT_MAX_SKEW_MS: u64 = 10 * 60 * 1000;

/// A point in hybrid logical time. Ordered by wall time, then counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Logical counter within `wall_ms`.
    pub counter: u32,
}

impl Timestamp {
    /// Encoded size: `u64` wall time and `u32` counter, big-endian.
    pub const ENCODED_LEN: usize = 12;

    /// A timestamp at `wall_ms` with counter zero.
    pub const fn from_wall_ms(wall_ms: u64) -> Self {
        Self { wall_ms, counter: 0 }
    }

    /// How far ahead of `now_ms` this timestamp is (zero if not ahead).
    pub fn ahead_of(&self, now_ms: u64) -> u64 {
        self.wall_ms.saturating_sub(now_ms)
    }

    /// Whether this timestamp is within `max_skew_ms` of `now_ms` or earlier.
    pub fn is_visible_at(&self, now_ms: u64, max_skew_ms: u64) -> bool {
        self.wall_ms <= now_ms.saturating_add(max_skew_ms)
    }

    /// Checks the skew bound, describing the violation.
    pub fn check_skew(&self, now_ms: u64, max_skew_ms: u64) -> Result<(), ClockError> {
        if self.is_visible_at(now_ms, max_skew_ms) {
            Ok(())
        } else {
            Err(ClockError::TooFarAhead { stamp_ms: self.wall_ms, ahead_ms: self.ahead_of(now_ms), max_skew_ms })
        }
    }

    /// The next timestamp after this one: the counter plus one, or the next millisecond when the
    /// counter is exhausted.
    fn successor(self) -> Result<Self, ClockError> {
        match self.counter.checked_add(1) {
            Some(counter) => Ok(Self { wall_ms: self.wall_ms, counter }),
            None => {
                let wall_ms = self.wall_ms.checked_add(1).ok_or(ClockError::Exhausted)?;
                Ok(Self { wall_ms, counter: 0 })
            }
        }
    }
}

/// A hybrid logical clock. Restore it from the last timestamp this device issued or observed, so
/// that it never goes backwards across restarts.
#[derive(Clone, Debug)]
pub struct HybridClock {
    last: Timestamp,
    max_skew_ms: u64,
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SKEW_MS)
    }
}

impl HybridClock {
    /// A clock that has seen nothing yet.
    pub fn new(max_skew_ms: u64) -> Self {
        Self { last: Timestamp::default(), max_skew_ms }
    }

    /// A clock that continues after `last`.
    pub fn restore(last: Timestamp, max_skew_ms: u64) -> Self {
        Self { last, max_skew_ms }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// The allowed skew.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// Stamps a local event at wall time `now_ms`: strictly greater than every timestamp issued
    /// or observed before, and at least `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Result<Timestamp, ClockError> {
        let next = if now_ms > self.last.wall_ms { Timestamp::from_wall_ms(now_ms) } else { self.last.successor()? };
        self.last = next;
        Ok(next)
    }

    /// Folds in a timestamp from a peer at local wall time `now_ms`. A timestamp more than the
    /// allowed skew ahead is refused and leaves the clock unchanged.
    pub fn observe(&mut self, remote: Timestamp, now_ms: u64) -> Result<(), ClockError> {
        remote.check_skew(now_ms, self.max_skew_ms)?;
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_goes_back() {
        let mut clock = HybridClock::default();
        let a = clock.tick(1_000).unwrap();
        let b = clock.tick(900).unwrap();
        let c = clock.tick(1_000).unwrap();
        let d = clock.tick(2_000).unwrap();
        assert!(a < b && b < c && c < d);
        assert_eq!(d, Timestamp::from_wall_ms(2_000));
    }

    #[test]
    fn far_future_is_refused_at_the_exact_bound() {
        let mut clock = HybridClock::new(100);
        assert!(clock.observe(Timestamp::from_wall_ms(1_100), 1_000).is_ok());
        let err = clock.observe(Timestamp::from_wall_ms(1_101), 1_000).unwrap_err();
        assert_eq!(err, ClockError::TooFarAhead { stamp_ms: 1_101, ahead_ms: 101, max_skew_ms: 100 });
        assert_eq!(clock.last(), Timestamp::from_wall_ms(1_100));
    }

    #[test]
    fn hostile_extremes_do_not_overflow() {
        let mut clock = HybridClock::new(u64::MAX);
        let top = Timestamp { wall_ms: u64::MAX, counter: u32::MAX };
        assert!(clock.observe(top, u64::MAX).is_ok());
        assert_eq!(clock.tick(u64::MAX), Err(ClockError::Exhausted));
        let mut clock = HybridClock::new(10);
        assert!(clock.observe(top, 0).is_err());
        assert!(clock.observe(top, u64::MAX).is_ok());
        let almost = Timestamp { wall_ms: 5, counter: u32::MAX };
        let mut clock = HybridClock::restore(almost, 10);
        assert_eq!(clock.tick(0).unwrap(), Timestamp::from_wall_ms(6));
    }
}

//! Time as a dependency: production reads the system clock, tests tick a fake one so that nothing
//! waits on real time.

use chrono::{DateTime, Duration, DurationRound, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Timestamps are cut to microseconds, PostgreSQL's precision, so that a value read back from the
/// database compares equal to the one that was written.
fn to_db_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_db_precision(Utc::now())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<DateTime<Utc>>,
}

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        FakeClock { now: Mutex::new(to_db_precision(start)) }
    }

    /// Starts at the real current time, so rows it stamps sort sensibly next to `now()` defaults.
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    pub fn tick(&self, by: std::time::Duration) {
        let by = Duration::from_std(by).expect("tick fits in chrono::Duration");
        *self.now.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_ticked() {
        let clock = FakeClock::starting_now();
        let before = clock.now();
        assert_eq!(clock.now(), before);
        clock.tick(std::time::Duration::from_secs(90));
        assert_eq!(clock.now() - before, Duration::seconds(90));
    }
}

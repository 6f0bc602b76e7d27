//! A processor's fuel rate: a token bucket in units of fuel.
//!
//! A call may start whenever the bucket is not in debt; what it burns is
//! taken afterwards (a call's cost is known only when it returns), which can
//! push the bucket into debt that later refills pay off. On average a
//! processor burns at most its rate; a burst is bounded by one second's
//! worth plus one call's cap.

use std::time::{Duration, Instant};

pub struct FuelBucket {
    fuel_per_sec: f64,
    /// Fuel available; negative while paying off a call's overdraft.
    balance: f64,
    refilled_at: Instant,
}

impl FuelBucket {
    pub fn new(fuel_per_sec: u64) -> Self {
        Self {
            fuel_per_sec: fuel_per_sec.max(1) as f64,
            balance: fuel_per_sec as f64,
            refilled_at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.duration_since(self.refilled_at).as_secs_f64() * self.fuel_per_sec;
        self.balance = (self.balance + earned).min(self.fuel_per_sec);
        self.refilled_at = now;
    }

    /// How long to wait before the next call may start (zero if now).
    pub fn wait_time(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.balance > 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.balance) / self.fuel_per_sec)
        }
    }

    /// Fuel available now (zero while in debt).
    pub fn available(&mut self) -> u64 {
        self.refill(Instant::now());
        self.balance.max(0.0) as u64
    }

    pub fn spend(&mut self, fuel: u64) {
        self.refill(Instant::now());
        self.balance -= fuel as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_makes_the_caller_wait_in_proportion() {
        let mut bucket = FuelBucket::new(1_000);
        assert_eq!(bucket.wait_time(), Duration::ZERO);
        bucket.spend(3_000);
        let wait = bucket.wait_time();
        assert!(
            wait > Duration::from_millis(1_900) && wait <= Duration::from_millis(2_010),
            "{wait:?}"
        );
    }
}

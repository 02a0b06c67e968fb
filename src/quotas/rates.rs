//! Request rates, with governor's keyed GCRA limiters: one bucket per user
//! (`limits.rate_requests_per_second`, `limits.rate_request_burst`) and
//! one per client address for requests that fail authentication
//! (`limits.rate_auth_failures_per_minute`). An address that spends its
//! failure allowance is refused before its tokens are checked until the
//! allowance comes back, so tokens cannot be tried fast. Buckets that are
//! full again are dropped by [`Rates::sweep`], so memory follows the
//! clients of the last minute, not every client ever seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};

use crate::config::Limits;
use crate::http::error::ApiError;

#[derive(Debug)]
pub struct Rates {
    users: DefaultKeyedRateLimiter<String>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that spent their failure allowance, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Rates {
    pub fn new(limits: &Limits) -> Self {
        let per_user = Quota::per_second(at_least_one(limits.rate_requests_per_second))
            .allow_burst(at_least_one(limits.rate_request_burst));
        let failures = Quota::per_minute(at_least_one(limits.rate_auth_failures_per_minute));
        Self {
            users: RateLimiter::keyed(per_user),
            failures: RateLimiter::keyed(failures),
            blocked: Mutex::default(),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
        not_until.wait_time_from(self.clock.now())
    }

    /// Counts one request of `user`; over the rate, `rate-limited`.
    pub fn request(&self, user: &str) -> Result<(), ApiError> {
        let user = user.to_string();
        self.users
            .check_key(&user)
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: self.wait(&not_until),
                why: "you are sending requests faster than the server takes from one user \
                      (limits.rate_requests_per_second)"
                    .into(),
            })
    }

    /// Refuses `client` while it is blocked for failed authentications.
    pub fn refuse_blocked(&self, client: IpAddr) -> Result<(), ApiError> {
        let until = self
            .blocked
            .lock()
            .ok()
            .and_then(|b| b.get(&client).copied());
        match until.map(|u| u.saturating_duration_since(Instant::now())) {
            Some(left) if !left.is_zero() => Err(Self::too_many_failures(left)),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `client`: `Err` (and a block)
    /// once its allowance is spent.
    pub fn failed(&self, client: IpAddr) -> Result<(), ApiError> {
        let Err(not_until) = self.failures.check_key(&client) else {
            return Ok(());
        };
        let left = self.wait(&not_until);
        if let Ok(mut blocked) = self.blocked.lock() {
            blocked.insert(client, Instant::now() + left);
        }
        Err(Self::too_many_failures(left))
    }

    fn too_many_failures(retry_after: Duration) -> ApiError {
        ApiError::RateLimited {
            retry_after,
            why: "too many requests from your address had a missing or bad token \
                  (limits.rate_auth_failures_per_minute); fix the token and retry later"
                .into(),
        }
    }

    /// Forgets buckets that are full again and blocks that have ended.
    pub fn sweep(&self) {
        for limiter in [&self.users as &dyn Sweep, &self.failures] {
            limiter.sweep();
        }
        let now = Instant::now();
        if let Ok(mut blocked) = self.blocked.lock() {
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        }
    }

    /// Keys held (users and addresses).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.users.len() + self.failures.len()
    }
}

/// A keyed limiter that can drop its idle keys, whatever its key type.
trait Sweep {
    fn sweep(&self);
}

impl<K: std::hash::Hash + Eq + Clone> Sweep for DefaultKeyedRateLimiter<K> {
    fn sweep(&self) {
        self.retain_recent();
        self.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32, failures: u32) -> Limits {
        Limits {
            rate_requests_per_second: per_second,
            rate_request_burst: burst,
            rate_auth_failures_per_minute: failures,
            ..Limits::default()
        }
    }

    #[test]
    fn a_user_gets_the_burst_then_a_retry_after() {
        let rates = Rates::new(&limits(1, 3, 30));
        for _ in 0..3 {
            rates.request("alice").expect("within the burst");
        }
        match rates.request("alice") {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}")
            }
            other => panic!("not limited: {other:?}"),
        }
        rates
            .request("bob")
            .expect("another user has their own bucket");
    }

    #[test]
    fn an_address_that_fails_too_often_is_blocked_before_any_check() {
        let rates = Rates::new(&limits(20, 100, 2));
        let client: IpAddr = "192.0.2.1".parse().expect("ip");
        rates.refuse_blocked(client).expect("not blocked yet");
        rates.failed(client).expect("first failure");
        rates.failed(client).expect("second failure");
        assert!(rates.failed(client).is_err(), "third: allowance spent");
        assert!(rates.refuse_blocked(client).is_err(), "blocked now");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        rates
            .refuse_blocked(other)
            .expect("other addresses are not");
    }

    #[test]
    fn the_sweep_forgets_idle_keys() {
        let rates = Rates::new(&limits(1000, 1000, 60_000));
        for n in 0..100 {
            rates.request(&format!("user{n}")).expect("request");
        }
        assert_eq!(rates.keys(), 100);
        // At 1000 per second, one request's cell is back within 1 ms.
        std::thread::sleep(Duration::from_millis(20));
        rates.sweep();
        assert_eq!(rates.keys(), 0);
    }
}

//! The backoff policy for transient failures: pure arithmetic, no I/O and no clock.
//!
//! Exponential with "full jitter" (a uniform pick between zero and the exponential ceiling), so
//! many files failing together do not retry together; a server's `Retry-After` is a floor.

use std::time::Duration;

/// The wait before retry number `attempt` (1 for the first retry).
pub fn backoff(
    attempt: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exp = initial.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let ceiling = exp.min(max.as_secs_f64());
    // Half fixed, half jitter: never retry instantly, never all at once.
    let wait = Duration::from_secs_f64(ceiling / 2.0 + ceiling / 2.0 * unit.clamp(0.0, 1.0));
    match retry_after {
        Some(floor) if floor > wait => floor.min(max.max(floor)),
        _ => wait,
    }
}

/// The attempt number whose backoff ceiling is about `age`: used while the platform cannot be
/// reached, when failures are not counted but the waits must still grow (roughly doubling).
pub fn attempt_for_age(age: Duration, initial: Duration) -> u32 {
    let ratio = age.as_secs_f64() / initial.as_secs_f64().max(1e-3);
    if ratio < 1.0 {
        1
    } else {
        (ratio.log2().floor() as u32).saturating_add(2).min(31)
    }
}

/// Backoff with a random jitter unit.
pub fn backoff_jittered(
    attempt: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    backoff(attempt, initial, max, retry_after, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        assert_eq!(backoff(1, S, 60 * S, None, 1.0), S);
        assert_eq!(backoff(2, S, 60 * S, None, 1.0), 2 * S);
        assert_eq!(backoff(5, S, 60 * S, None, 1.0), 16 * S);
        assert_eq!(backoff(30, S, 60 * S, None, 1.0), 60 * S);
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        assert_eq!(backoff(3, S, 60 * S, None, 0.0), 2 * S);
        assert_eq!(backoff(3, S, 60 * S, None, 0.5), 3 * S);
    }

    #[test]
    fn waits_grow_with_the_age_of_an_outage() {
        assert_eq!(attempt_for_age(Duration::ZERO, S), 1);
        assert_eq!(attempt_for_age(S / 2, S), 1);
        assert_eq!(attempt_for_age(S, S), 2);
        assert_eq!(attempt_for_age(4 * S, S), 4);
        assert_eq!(attempt_for_age(7 * S, S), 4);
        assert_eq!(attempt_for_age(8 * S, S), 5);
        // The ceiling of the wait is never more than twice the outage so far.
        for secs in [1u64, 3, 10, 100, 1000] {
            let age = Duration::from_secs(secs);
            let ceiling = backoff(attempt_for_age(age, S), S, 3600 * S, None, 1.0);
            assert!(
                ceiling <= 2 * age && ceiling > age / 2,
                "{secs}s: {ceiling:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(backoff(1, S, 60 * S, Some(7 * S), 0.0), 7 * S);
        assert_eq!(backoff(6, S, 60 * S, Some(7 * S), 1.0), 32 * S);
    }
}

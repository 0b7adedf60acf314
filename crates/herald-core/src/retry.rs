//! Retry schedule and outcome classification.
//!
//! This module decides two things, as pure functions:
//!
//! * **when** a failed delivery is tried again ([`RetryPolicy::next_delay`]): an exponential or
//!   fixed [`Schedule`], spread by jitter, and stretched (never shortened) by a receiver's
//!   `Retry-After` header ([`parse_retry_after`]);
//! * **what** an HTTP response means for the delivery ([`classify_http`]): success, retry,
//!   permanent failure, or "gone" (the destination should be disabled).
//!
//! It does not schedule anything, read the clock, count consecutive failures or disable
//! destinations; the engine does that with the answers given here. Network errors and timeouts
//! never reach [`classify_http`]: the engine treats them as retryable without a status code.
//!
//! Attempts are counted from 1: after the first attempt fails, `attempts_made` is 1 and the
//! delay returned is the one before the first *retry*. A policy with `retries = 10` therefore
//! allows 11 attempts in total ([`RetryPolicy::max_attempts`]).

use std::time::Duration;

use jiff::Timestamp;

/// Default delay before the first retry: 30 seconds.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(30);
/// Default growth factor of the exponential schedule: each delay doubles.
pub const DEFAULT_FACTOR: f64 = 2.0;
/// Default ceiling of one exponential delay: 24 hours.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default number of retries after the first attempt.
pub const DEFAULT_RETRIES: u32 = 10;
/// Default jitter: each scheduled delay is moved by up to ±10 %.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Default cap on how long a `Retry-After` header may push a retry back: 1 hour.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The delays between attempts, before jitter and `Retry-After` are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Retry `n` (1-based) waits `initial × factor^(n-1)`, capped at `max_interval`;
    /// there are `retries` retries.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth factor per retry (2.0 doubles); must be finite and ≥ 1.
        factor: f64,
        /// Ceiling of a single delay (before jitter).
        max_interval: Duration,
        /// Number of retries after the first attempt.
        retries: u32,
    },
    /// An explicit list: retry `n` (1-based) waits the `n`-th delay; there are as many
    /// retries as entries. An empty list means "never retry".
    Fixed(Vec<Duration>),
}

impl Schedule {
    /// Number of retries this schedule allows after the first attempt.
    pub fn retries(&self) -> u32 {
        match self {
            Schedule::Exponential { retries, .. } => *retries,
            Schedule::Fixed(delays) => u32::try_from(delays.len()).unwrap_or(u32::MAX),
        }
    }

    /// The un-jittered delay before retry number `retry` (1-based), or `None` past the end.
    fn base_delay(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.retries() {
            return None;
        }
        match self {
            Schedule::Exponential {
                initial,
                factor,
                max_interval,
                ..
            } => {
                let max = max_interval.as_secs_f64();
                let raw = initial.as_secs_f64() * factor.powf(f64::from(retry - 1));
                // NaN, infinity and anything above the ceiling all end at the ceiling;
                // a negative result (only possible with a negative factor) is zero.
                let secs = if raw.is_nan() || raw > max {
                    max
                } else if raw < 0.0 {
                    0.0
                } else {
                    raw
                };
                Some(Duration::try_from_secs_f64(secs).unwrap_or(*max_interval))
            }
            Schedule::Fixed(delays) => delays.get(usize::try_from(retry - 1).ok()?).copied(),
        }
    }
}

/// How failed deliveries are retried: a [`Schedule`], jitter, and a cap on `Retry-After`.
///
/// The default is exponential from 30 s, doubling, capped at 24 h per delay, 10 retries
/// (30 s, 1 min, 2 min, … 4 h 16 min: about 8.5 h from first to last attempt), ±10 % jitter,
/// and `Retry-After` honoured up to 1 h.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delays before jitter.
    pub schedule: Schedule,
    /// Jitter as a fraction of the scheduled delay, in `0.0..=1.0`: a delay `d` becomes a
    /// uniformly random value in `d × (1 - jitter) ..= d × (1 + jitter)`. Values outside the
    /// range are clamped when used (NaN counts as 0); [`RetryPolicy::validate`] rejects them.
    pub jitter: f64,
    /// The most a receiver's `Retry-After` can delay the next attempt.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: Schedule::Exponential {
                initial: DEFAULT_INITIAL_DELAY,
                factor: DEFAULT_FACTOR,
                max_interval: DEFAULT_MAX_INTERVAL,
                retries: DEFAULT_RETRIES,
            },
            jitter: DEFAULT_JITTER,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// A [`RetryPolicy`] setting that makes no sense; names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RetryPolicyError {
    /// The offending setting, e.g. `"factor"`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts_made` attempts (1 = first attempt just
    /// failed), or `None` when retries are exhausted.
    ///
    /// The scheduled delay is jittered first; then, when the failed response carried a
    /// `Retry-After` (see [`parse_retry_after`]), the result is
    /// `max(jittered delay, min(retry_after, max_retry_after))`: the receiver may push the
    /// retry back (by at most `max_retry_after`) but never bring it forward, and it never
    /// grants an extra attempt. `attempts_made == 0` (nothing tried yet) gives
    /// `Some(Duration::ZERO)`: the first attempt is immediate.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        rng: &mut impl rand::Rng,
    ) -> Option<Duration> {
        if attempts_made == 0 {
            return Some(Duration::ZERO);
        }
        let base = self.schedule.base_delay(attempts_made)?;
        let delay = apply_jitter(base, self.jitter, rng);
        Some(match retry_after {
            Some(ra) => delay.max(ra.min(self.max_retry_after)),
            None => delay,
        })
    }

    /// Total attempts a delivery gets: the first one plus the schedule's retries.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.retries().saturating_add(1)
    }

    /// Checks the settings: jitter in `0..=1`; for an exponential schedule a non-zero
    /// `initial`, a finite `factor` ≥ 1 and `max_interval` ≥ `initial`. Fixed lists accept
    /// any delays, including zero.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(RetryPolicyError {
                field: "jitter",
                problem: "must be a fraction between 0 and 1",
            });
        }
        if let Schedule::Exponential {
            initial,
            factor,
            max_interval,
            ..
        } = &self.schedule
        {
            if initial.is_zero() {
                return Err(RetryPolicyError {
                    field: "initial",
                    problem: "must be greater than zero",
                });
            }
            if !factor.is_finite() || *factor < 1.0 {
                return Err(RetryPolicyError {
                    field: "factor",
                    problem: "must be a finite number of at least 1",
                });
            }
            if max_interval < initial {
                return Err(RetryPolicyError {
                    field: "max_interval",
                    problem: "must not be shorter than the initial delay",
                });
            }
        }
        Ok(())
    }
}

/// Moves `base` uniformly within ±`jitter` of itself; never negative.
fn apply_jitter(base: Duration, jitter: f64, rng: &mut impl rand::Rng) -> Duration {
    let j = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    if j == 0.0 || base.is_zero() {
        return base;
    }
    let factor: f64 = rng.random_range(-j..=j);
    let secs = base.as_secs_f64() * (1.0 + factor);
    // `secs` is ≥ 0 because `j` ≤ 1; it can only fail to convert when absurdly large.
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(base)
}

/// Parses a Retry-After header value: delta-seconds or an HTTP-date (RFC 9110 IMF-fixdate),
/// relative to `now`.
///
/// * `"120"` → 120 s. Only plain digits are accepted (no sign, no fraction); a number too large
///   for `u64` saturates to [`Duration::MAX`] (callers cap it anyway).
/// * `"Wed, 21 Oct 2015 07:28:00 GMT"` (IMF-fixdate) → the time from `now` to that instant.
///   The two obsolete forms RFC 9110 asks recipients to accept are understood too: RFC 850
///   (`"Wednesday, 21-Oct-15 07:28:00 GMT"`) and asctime (`"Wed Oct 21 07:28:00 2015"`).
///   A date in the past gives `Some(Duration::ZERO)` ("retry whenever").
/// * Anything else (empty, garbage, negative numbers) → `None`: treat as absent.
///
/// Surrounding whitespace is ignored.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let at = parse_http_date(value)?;
    let ahead = at.duration_since(now);
    if ahead.is_negative() {
        return Some(Duration::ZERO);
    }
    Duration::try_from(ahead).ok()
}

/// Parses the three HTTP-date forms of RFC 9110 §5.6.7.
fn parse_http_date(value: &str) -> Option<Timestamp> {
    // IMF-fixdate is a subset of RFC 2822; the weekday is informational only.
    static IMF: jiff::fmt::rfc2822::DateTimeParser =
        jiff::fmt::rfc2822::DateTimeParser::new().relaxed_weekday(true);
    if let Ok(ts) = IMF.parse_timestamp(value) {
        return Some(ts);
    }
    // RFC 850 (obsolete): "Sunday, 06-Nov-94 08:49:37 GMT".
    if let Ok(tm) = jiff::fmt::strtime::parse("%A, %d-%b-%y %H:%M:%S GMT", value)
        && let Ok(dt) = tm.to_datetime()
    {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    // asctime (obsolete): "Sun Nov  6 08:49:37 1994", always UTC.
    let collapsed = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Ok(tm) = jiff::fmt::strtime::parse("%a %b %d %H:%M:%S %Y", &collapsed)
        && let Ok(dt) = tm.to_datetime()
    {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    None
}

/// What an HTTP response means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (2xx).
    Success,
    /// Failed; try again per the [`RetryPolicy`]. `after` is the response's `Retry-After`,
    /// passed through for [`RetryPolicy::next_delay`].
    Retry {
        /// The receiver's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
    /// Failed; retrying would not help.
    Permanent,
    /// 410 Gone: the receiver says the endpoint no longer exists; disable the destination.
    Gone,
}

/// Classifies an HTTP status.
///
/// | status | verdict |
/// |---|---|
/// | 2xx | [`Verdict::Success`] |
/// | 408, 425, 429, 5xx | [`Verdict::Retry`] (carrying `retry_after`) |
/// | 410 | [`Verdict::Gone`] |
/// | 3xx (redirects are not followed) and other 4xx | [`Verdict::Permanent`] |
/// | 1xx or outside 100..=599 (a broken server, like a network error) | [`Verdict::Retry`] |
///
/// A status listed in `extra_retryable` (the operator's "retry on" list) is retried instead,
/// whatever the table says — including 3xx, 410 and other 4xx — except that 2xx is always
/// success.
pub fn classify_http(
    status: u16,
    retry_after: Option<Duration>,
    extra_retryable: &[u16],
) -> Verdict {
    let retry = Verdict::Retry { after: retry_after };
    match status {
        200..=299 => Verdict::Success,
        _ if extra_retryable.contains(&status) => retry,
        408 | 425 | 429 | 500..=599 => retry,
        410 => Verdict::Gone,
        300..=499 => Verdict::Permanent,
        _ => retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_is_valid_and_allows_eleven_attempts() {
        let p = RetryPolicy::default();
        p.validate().unwrap();
        assert_eq!(p.max_attempts(), 11);
        assert_eq!(p.schedule.retries(), 10);
    }

    #[test]
    fn zero_jitter_gives_exact_doubling_then_exhaustion() {
        let p = no_jitter();
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<_> = (1..=10)
            .map(|n| p.next_delay(n, None, &mut rng).unwrap())
            .collect();
        let want: Vec<_> = [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360]
            .into_iter()
            .map(S)
            .collect();
        assert_eq!(got, want);
        assert_eq!(p.next_delay(11, None, &mut rng), None);
        assert_eq!(p.next_delay(u32::MAX, None, &mut rng), None);
        assert_eq!(p.next_delay(0, None, &mut rng), Some(Duration::ZERO));
    }

    #[test]
    fn exponential_is_capped_at_max_interval() {
        let p = RetryPolicy {
            schedule: Schedule::Exponential {
                initial: S(30),
                factor: 2.0,
                max_interval: S(100),
                retries: 2000,
            },
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(p.next_delay(2, None, &mut rng), Some(S(60)));
        assert_eq!(p.next_delay(3, None, &mut rng), Some(S(100)));
        // factor^1999 overflows f64 to infinity: still the ceiling, no panic.
        assert_eq!(p.next_delay(2000, None, &mut rng), Some(S(100)));
        assert_eq!(p.next_delay(2001, None, &mut rng), None);
        assert_eq!(p.max_attempts(), 2001);
    }

    #[test]
    fn absurd_settings_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(3);
        for factor in [f64::NAN, f64::INFINITY, -2.0, 0.0] {
            let p = RetryPolicy {
                schedule: Schedule::Exponential {
                    initial: S(30),
                    factor,
                    max_interval: Duration::MAX,
                    retries: 5,
                },
                jitter: f64::NAN,
                max_retry_after: Duration::MAX,
            };
            assert!(p.validate().is_err());
            for n in 0..=6 {
                let _ = p.next_delay(n, Some(Duration::MAX), &mut rng);
            }
        }
        let p = RetryPolicy {
            jitter: 7.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "jitter");
        for _ in 0..100 {
            // Clamped to 1.0: within 0..=2×.
            assert!(p.next_delay(1, None, &mut rng).unwrap() <= S(60));
        }
    }

    #[test]
    fn fixed_list() {
        let p = RetryPolicy {
            schedule: Schedule::Fixed(vec![S(5), S(60), S(3600)]),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        p.validate().unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.next_delay(1, None, &mut rng), Some(S(5)));
        assert_eq!(p.next_delay(2, None, &mut rng), Some(S(60)));
        assert_eq!(p.next_delay(3, None, &mut rng), Some(S(3600)));
        assert_eq!(p.next_delay(4, None, &mut rng), None);

        let never = RetryPolicy {
            schedule: Schedule::Fixed(vec![]),
            ..RetryPolicy::default()
        };
        assert_eq!(never.max_attempts(), 1);
        assert_eq!(never.next_delay(1, Some(S(10)), &mut rng), None);
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let p = RetryPolicy::default(); // ±10 %
        let mut rng = StdRng::seed_from_u64(42);
        let (lo, hi) = (S(27), S(33));
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        let mut sum = 0.0;
        let n = 10_000;
        for _ in 0..n {
            let d = p.next_delay(1, None, &mut rng).unwrap();
            assert!(d >= lo && d <= hi, "{d:?} outside ±10 % of 30 s");
            min = min.min(d);
            max = max.max(d);
            sum += d.as_secs_f64();
        }
        // Uniform: the samples reach near both ends and average near the middle.
        assert!(min < Duration::from_millis(27_300), "{min:?}");
        assert!(max > Duration::from_millis(32_700), "{max:?}");
        let mean = sum / f64::from(n);
        assert!((mean - 30.0).abs() < 0.2, "{mean}");

        // Full jitter never goes negative.
        let full = RetryPolicy {
            jitter: 1.0,
            ..RetryPolicy::default()
        };
        for _ in 0..n {
            assert!(full.next_delay(3, None, &mut rng).unwrap() <= S(240));
        }
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        let p = RetryPolicy::default();
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(7);
            (1..=10).map(|n| p.next_delay(n, None, &mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(7);
            (1..=10).map(|n| p.next_delay(n, None, &mut rng)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(Option::is_some));
    }

    #[test]
    fn retry_after_stretches_but_never_shortens_and_is_capped() {
        let p = no_jitter();
        let mut rng = StdRng::seed_from_u64(1);
        // Longer than the schedule: honoured.
        assert_eq!(p.next_delay(1, Some(S(120)), &mut rng), Some(S(120)));
        // Shorter than the schedule: the schedule wins.
        assert_eq!(p.next_delay(3, Some(S(10)), &mut rng), Some(S(120)));
        // Longer than the cap: capped at 1 h.
        assert_eq!(p.next_delay(1, Some(S(86_400)), &mut rng), Some(S(3600)));
        assert_eq!(
            p.next_delay(1, Some(Duration::MAX), &mut rng),
            Some(S(3600))
        );
        // The cap never shortens the schedule itself (retry 9 is 7680 s > 1 h).
        assert_eq!(p.next_delay(9, Some(S(86_400)), &mut rng), Some(S(7680)));
        // And it grants no extra attempt.
        assert_eq!(p.next_delay(11, Some(S(5)), &mut rng), None);
    }

    #[test]
    fn parse_retry_after_seconds() {
        let now = ts("2015-10-21T07:00:00Z");
        assert_eq!(parse_retry_after("120", now), Some(S(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(S(0)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        for bad in ["", "  ", "-5", "+5", "1.5", "12 s", "soon", "0x10", "١٢"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_retry_after_dates() {
        let now = ts("2015-10-21T07:00:00Z");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(S(28 * 60))
        );
        // Wrong weekday is tolerated (RFC 9110 dates are compared by their date part).
        assert_eq!(
            parse_retry_after("Mon, 21 Oct 2015 07:28:00 GMT", now),
            Some(S(28 * 60))
        );
        // Obsolete forms.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            Some(S(28 * 60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", now),
            Some(S(28 * 60))
        );
        assert_eq!(
            parse_retry_after("Thu Oct  1 07:28:00 2015", ts("2015-10-01T07:27:00Z")),
            Some(S(60))
        );
        // In the past: retry whenever.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 06:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        // Garbage.
        for bad in [
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 25:28:00 GMT",
            "21 Oct",
            "2015-10-21T07:28:00Z",
            "Wed, 21 Oct 2015 07:28:00 GMT trailing",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn classification_table() {
        use Verdict::*;
        let ra = Some(S(9));
        let cases: &[(u16, Verdict)] = &[
            (200, Success),
            (201, Success),
            (204, Success),
            (299, Success),
            (301, Permanent),
            (302, Permanent),
            (304, Permanent),
            (307, Permanent),
            (308, Permanent),
            (400, Permanent),
            (401, Permanent),
            (403, Permanent),
            (404, Permanent),
            (405, Permanent),
            (409, Permanent),
            (413, Permanent),
            (422, Permanent),
            (408, Retry { after: ra }),
            (425, Retry { after: ra }),
            (429, Retry { after: ra }),
            (410, Gone),
            (500, Retry { after: ra }),
            (502, Retry { after: ra }),
            (503, Retry { after: ra }),
            (504, Retry { after: ra }),
            (599, Retry { after: ra }),
            (100, Retry { after: ra }),
            (101, Retry { after: ra }),
            (0, Retry { after: ra }),
            (600, Retry { after: ra }),
            (999, Retry { after: ra }),
        ];
        for &(status, want) in cases {
            assert_eq!(classify_http(status, ra, &[]), want, "status {status}");
        }
        assert_eq!(classify_http(503, None, &[]), Retry { after: None });
    }

    #[test]
    fn extra_retryable_overrides_permanent_but_not_success() {
        let extra = [404, 410, 302, 200];
        assert_eq!(
            classify_http(404, None, &extra),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            classify_http(410, None, &extra),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            classify_http(302, Some(S(1)), &extra),
            Verdict::Retry { after: Some(S(1)) }
        );
        assert_eq!(classify_http(200, None, &extra), Verdict::Success);
        assert_eq!(classify_http(400, None, &extra), Verdict::Permanent);
    }
}

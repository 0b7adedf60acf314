//! What an attempt causes once its destination's failure count is known — the decisions both
//! stores make inside their attempt transaction (`record_attempt`). Pure; each store does its
//! own reading and writing around it.

use herald_core::operator::{self, DestinationRef};
use herald_core::{AttemptStatus, Event};
use jiff::Timestamp;

use crate::AttemptRecord;

/// Why a destination was disabled after a `410`.
pub(crate) const GONE: &str = "the receiver answered 410 Gone";
/// Why a destination was disabled at the failure threshold.
pub(crate) const TOO_MANY_FAILURES: &str = "too many consecutive failures";

/// What a counted attempt leads to.
pub(crate) struct Plan {
    /// Disable the destination, for this reason.
    pub disable: Option<&'static str>,
    /// The consecutive-failure level reached, if any.
    level: Option<u32>,
    /// Whether operator events may be written (not for operator destinations).
    emits: bool,
}

impl Plan {
    /// The plan for `rec` after the destination's count became `failures`.
    pub(crate) fn new(rec: &AttemptRecord, failures: u32) -> Plan {
        let fx = &rec.effects;
        let step = if rec.attempt.status == AttemptStatus::Failed {
            fx.policy.step(failures)
        } else {
            fx.policy.step(0)
        };
        let disable = if fx.gone {
            Some(GONE)
        } else if step.disable {
            Some(TOO_MANY_FAILURES)
        } else {
            None
        };
        Plan {
            disable,
            level: step.level,
            emits: rec.attempt.tenant_id != operator::OPERATOR_TENANT,
        }
    }

    /// Whether any operator event follows (so the store must read the destination).
    pub(crate) fn has_events(&self, rec: &AttemptRecord) -> bool {
        self.emits
            && (rec.effects.attempt_events
                || self.level.is_some()
                || self.disable.is_some()
                || rec.effects.exhausted.is_some())
    }

    /// The operator events, in the order they happened: the attempt, the level it reached,
    /// the exhausted retries, the disable. `d` is the destination after the disable (if any).
    pub(crate) fn events(
        &self,
        rec: &AttemptRecord,
        failures: u32,
        d: &DestinationRef,
        now: Timestamp,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.emits {
            return out;
        }
        let fx = &rec.effects;
        if fx.attempt_events {
            out.push(operator::attempt(&rec.attempt));
        }
        if let Some(level) = self.level {
            out.push(operator::consecutive_failure(
                d,
                failures,
                &fx.policy,
                level,
                self.disable == Some(TOO_MANY_FAILURES),
                now,
            ));
        }
        if let Some(event_time) = fx.exhausted {
            out.push(operator::exhausted(d, &rec.attempt, event_time));
        }
        if let Some(reason) = self.disable {
            out.push(operator::disabled(d, reason, now));
        }
        out
    }
}

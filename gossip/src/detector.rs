//! Per-member failure detection state: when the heartbeat last rose, and the
//! recent intervals between rises for the phi-accrual detector.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::Detector;

/// What a detector concludes about one member at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fresh,
    Suspect,
    Down,
}

/// Liveness evidence for one remote member, in this observer's clock.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    last_rise: Duration,
    intervals: VecDeque<Duration>,
    sum: Duration,
}

impl Liveness {
    /// Evidence for a member first heard of at `now`: the benefit of the doubt.
    pub(crate) fn new(now: Duration) -> Self {
        Self {
            last_rise: now,
            intervals: VecDeque::new(),
            sum: Duration::ZERO,
        }
    }

    /// Records that the member's heartbeat rose at `now`. Two rises at the same
    /// instant (two messages delivered together) count once: a zero interval
    /// would make the phi detector over-confident.
    pub(crate) fn observe_rise(&mut self, now: Duration, window: usize) {
        if now <= self.last_rise {
            return;
        }
        let interval = now - self.last_rise;
        self.last_rise = now;
        if window == 0 {
            return;
        }
        let bound = window.min(10_000);
        while self.intervals.len() >= bound {
            match self.intervals.pop_front() {
                Some(old) => self.sum = self.sum.saturating_sub(old),
                None => break,
            }
        }
        self.intervals.push_back(interval);
        self.sum = self.sum.saturating_add(interval);
    }

    /// Silence so far.
    pub(crate) fn silence(&self, now: Duration) -> Duration {
        now.saturating_sub(self.last_rise)
    }

    /// Phi at `now` with `bootstrap` as an extra sample, so one lucky short
    /// interval cannot make a new member look dead after a blink.
    pub(crate) fn phi(&self, now: Duration, bootstrap: Duration) -> f64 {
        let samples = self.intervals.len() as f64 + 1.0;
        let mean = (self.sum.as_secs_f64() + bootstrap.as_secs_f64()) / samples;
        if mean <= 0.0 {
            return f64::INFINITY;
        }
        self.silence(now).as_secs_f64() / mean * std::f64::consts::LOG10_E
    }

    /// The detector's conclusion at `now`.
    pub(crate) fn verdict(
        &self,
        now: Duration,
        detector: &Detector,
        bootstrap: Duration,
    ) -> Verdict {
        match *detector {
            Detector::Timeout {
                suspect_after,
                down_after,
            } => {
                let silence = self.silence(now);
                if silence > down_after {
                    Verdict::Down
                } else if silence > suspect_after {
                    Verdict::Suspect
                } else {
                    Verdict::Fresh
                }
            }
            Detector::PhiAccrual {
                suspect_phi,
                down_phi,
                ..
            } => {
                let phi = self.phi(now, bootstrap);
                if phi >= down_phi {
                    Verdict::Down
                } else if phi >= suspect_phi {
                    Verdict::Suspect
                } else {
                    Verdict::Fresh
                }
            }
        }
    }
}

/// Window length the detector wants recorded (none for the timeout detector).
pub(crate) fn window_of(detector: &Detector) -> usize {
    match *detector {
        Detector::Timeout { .. } => 0,
        Detector::PhiAccrual { window, .. } => window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const TIMEOUT: Detector = Detector::Timeout {
        suspect_after: Duration::from_secs(5),
        down_after: Duration::from_secs(10),
    };

    const PHI: Detector = Detector::PhiAccrual {
        suspect_phi: 4.0,
        down_phi: 8.0,
        window: 100,
    };

    #[track_caller]
    fn check(detector: Detector, rises: &[u64], now: u64, expect: Verdict) {
        let mut l = Liveness::new(secs(0));
        for &r in rises {
            l.observe_rise(secs(r), window_of(&detector));
        }
        assert_eq!(l.verdict(secs(now), &detector, secs(1)), expect);
    }

    #[test]
    fn verdicts() {
        check(TIMEOUT, &[], 5, Verdict::Fresh);
        check(TIMEOUT, &[], 6, Verdict::Suspect);
        check(TIMEOUT, &[], 10, Verdict::Suspect);
        check(TIMEOUT, &[], 11, Verdict::Down);
        check(TIMEOUT, &[3], 13, Verdict::Suspect);
        check(TIMEOUT, &[3], 14, Verdict::Down);
        // Every second: mean 1 s, down after 8 / log10(e) = 18.4 s of silence.
        let steady: Vec<u64> = (1..=50).collect();
        check(PHI, &steady, 50 + 9, Verdict::Fresh);
        check(PHI, &steady, 50 + 10, Verdict::Suspect);
        check(PHI, &steady, 50 + 18, Verdict::Suspect);
        check(PHI, &steady, 50 + 19, Verdict::Down);
        // Every 3 s: the detector waits three times longer.
        let slow: Vec<u64> = (1..=50).map(|i| i * 3).collect();
        check(PHI, &slow, 150 + 50, Verdict::Suspect);
        check(PHI, &slow, 150 + 56, Verdict::Down);
    }

    #[test]
    fn simultaneous_rises_count_once() {
        let mut l = Liveness::new(secs(0));
        l.observe_rise(secs(2), 10);
        l.observe_rise(secs(2), 10);
        assert_eq!(l.intervals.len(), 1);
    }

    #[test]
    fn window_is_bounded() {
        let mut l = Liveness::new(secs(0));
        for i in 1..=50 {
            l.observe_rise(secs(i), 10);
        }
        assert_eq!(l.intervals.len(), 10);
        assert_eq!(l.sum, secs(10));
    }
}

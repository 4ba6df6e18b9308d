//! Live metrics: the machine's CPU busy share and network throughput, measured with sysinfo and
//! folded into the two per-mille figures the core reports (`Event::MetricsSampled`).
//!
//! - CPU: sysinfo's global usage since the previous refresh (all cores), averaged over the last
//!   `window` samples, as per-mille of the machine's capacity.
//! - Network: bytes received plus transmitted over every interface (loopback included, so a local
//!   testnet measures its own traffic) per second over the same window, as per-mille of the
//!   configured link capacity, capped at 1000.
//!
//! sysinfo needs at least 200 ms between CPU refreshes and its first reading is garbage
//! (DESIGN.md): the first call to [`Sampler::sample`] primes the counters and returns `None`.
//! Floating point is fine here: the figures become integers before they reach the core, and the
//! core decides only from the integers recorded on chain.
//!
//! # Test-only fixed metrics
//!
//! Built with the `test-misbehaviour` cargo feature (never in a release build: only the root
//! package's tests turn it on, through a dev-dependency; see driver.rs, "Test-only
//! misbehaviour"), [`Sampler::new`] reads `TINYCHAIN_TEST_METRICS` once:
//!
//! - `fixed=V` (V per-mille, 0 to 1000): every call to [`Sampler::sample`], the first one
//!   included (no priming), returns CPU = network = V, and the network throughput that V
//!   per-mille of the link capacity is. That is what the simulator's `MetricFault::Fixed(V)`
//!   (`metrics N fixed=V` in a scenario file) gives a simulated node, so a test of real
//!   processes knows the score each node reports and can compare the elections with a
//!   simulation of the same network (`tests/parity.rs`). sysinfo is not consulted.
//! - unset or empty: the measured figures above.
//! - anything else: an error from [`Sampler::new`] naming the variable and the form it takes,
//!   so the node does not start (a test that misspells it must not run on measured metrics).
//!
//! A node with fixed metrics says so once at start, at warn level. Without the feature the
//! variable is never read (the code is not compiled).

use std::collections::VecDeque;
use std::time::Instant;

/// One folded measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Sample {
    pub cpu_permille: u16,
    pub net_permille: u16,
    /// Bytes per second over all interfaces, received plus transmitted (window average).
    pub net_bytes_per_sec: u64,
}

/// One raw reading between two refreshes.
#[derive(Clone, Copy, Debug)]
struct Reading {
    cpu_permille: u16,
    net_bytes: u64,
    elapsed_ms: u64,
}

pub struct Sampler {
    system: sysinfo::System,
    networks: sysinfo::Networks,
    link_capacity_bytes_per_sec: u64,
    window: usize,
    readings: VecDeque<Reading>,
    last_refresh: Option<Instant>,
    /// `TINYCHAIN_TEST_METRICS=fixed=V`: the sample every call returns (see the module docs).
    #[cfg(feature = "test-misbehaviour")]
    fixed: Option<Sample>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read system metrics: {0}")]
    System(String),
    #[cfg(feature = "test-misbehaviour")]
    #[error(
        "{variable}={value:?} is not a test metrics source: write fixed=V with V per-mille from 0 to 1000 \
         (fixed=100 reports cpu = net = 100), or leave it unset to measure"
    )]
    TestMetrics { variable: &'static str, value: String },
}

impl Sampler {
    /// `link_capacity_mbit`: the network capacity the per-mille is measured against;
    /// `window`: how many samples the figures average over (at least 1).
    /// With the `test-misbehaviour` feature, `TINYCHAIN_TEST_METRICS` is read here (module docs).
    pub fn new(link_capacity_mbit: u64, window: usize) -> Result<Sampler, MetricsError> {
        let link_capacity_bytes_per_sec = link_capacity_mbit.saturating_mul(1_000_000 / 8).max(1);
        #[cfg(feature = "test-misbehaviour")]
        let fixed = test_metrics::from_env(link_capacity_bytes_per_sec)?;
        let system = sysinfo::System::new().map_err(|error| MetricsError::System(error.to_string()))?;
        let networks = sysinfo::Networks::new().map_err(|error| MetricsError::System(error.to_string()))?;
        Ok(Sampler {
            system,
            networks,
            link_capacity_bytes_per_sec,
            window: window.max(1),
            readings: VecDeque::new(),
            last_refresh: None,
            #[cfg(feature = "test-misbehaviour")]
            fixed,
        })
    }

    /// Refreshes the counters; returns the window's figures, or `None` on the first call.
    /// (With test metrics: the fixed sample, from the first call on.)
    pub fn sample(&mut self) -> Option<Sample> {
        #[cfg(feature = "test-misbehaviour")]
        if let Some(fixed) = self.fixed {
            return Some(fixed);
        }
        self.system.refresh_cpu_usage();
        self.networks.refresh(true);
        let now = Instant::now();
        // The first refresh only primes the counters.
        let previous = self.last_refresh.replace(now)?;
        let net_bytes = self.networks.values().map(|data| data.received().saturating_add(data.transmitted())).sum();
        self.readings.push_back(Reading {
            cpu_permille: cpu_permille(self.system.global_cpu_usage()),
            net_bytes,
            elapsed_ms: now.duration_since(previous).as_millis() as u64,
        });
        while self.readings.len() > self.window {
            self.readings.pop_front();
        }
        Some(fold(self.readings.iter().copied(), self.link_capacity_bytes_per_sec))
    }
}

/// sysinfo's usage in percent (0..=100, may overshoot a little) as per-mille.
fn cpu_permille(percent: f32) -> u16 {
    if !percent.is_finite() || percent <= 0.0 {
        return 0;
    }
    (percent * 10.0).round().min(1000.0) as u16
}

/// Averages a window of readings: CPU by time, network as total bytes over total time.
fn fold(readings: impl Iterator<Item = Reading> + Clone, link_capacity_bytes_per_sec: u64) -> Sample {
    let elapsed_ms: u64 = readings.clone().map(|reading| reading.elapsed_ms).sum();
    if elapsed_ms == 0 {
        return Sample::default();
    }
    let cpu_weighted: u64 = readings.clone().map(|reading| u64::from(reading.cpu_permille) * reading.elapsed_ms).sum();
    let bytes: u64 = readings.map(|reading| reading.net_bytes).sum();
    let net_bytes_per_sec = bytes.saturating_mul(1000) / elapsed_ms;
    let net_permille =
        (u128::from(net_bytes_per_sec) * 1000 / u128::from(link_capacity_bytes_per_sec.max(1))).min(1000);
    Sample {
        cpu_permille: (cpu_weighted / elapsed_ms).min(1000) as u16,
        net_permille: net_permille as u16,
        net_bytes_per_sec,
    }
}

/// The test-only metrics source, compiled only with the `test-misbehaviour` feature.
#[cfg(feature = "test-misbehaviour")]
mod test_metrics {
    use super::{MetricsError, Sample};

    /// The environment variable, read once by `Sampler::new`.
    pub const ENV_VAR: &str = "TINYCHAIN_TEST_METRICS";

    /// `Some(sample)` for `fixed=V`, `None` when the variable is unset or empty, an error naming
    /// the variable otherwise. Logs once when the metrics are fixed.
    pub fn from_env(link_capacity_bytes_per_sec: u64) -> Result<Option<Sample>, MetricsError> {
        let Some(value) = std::env::var_os(ENV_VAR) else { return Ok(None) };
        let Some(text) = value.to_str() else {
            return Err(MetricsError::TestMetrics { variable: ENV_VAR, value: value.to_string_lossy().into_owned() });
        };
        let fixed = parse(text, link_capacity_bytes_per_sec)?;
        if let Some(sample) = fixed {
            tracing::warn!(
                variable = ENV_VAR,
                value = text,
                cpu = sample.cpu_permille,
                net = sample.net_permille,
                "TEST METRICS: every metrics sample is fixed, nothing is measured"
            );
        }
        Ok(fixed)
    }

    /// The variable's value as a sample: `fixed=V` is CPU = network = V per-mille (0 to 1000),
    /// and the throughput V per-mille of the link is; empty is `None`.
    pub fn parse(text: &str, link_capacity_bytes_per_sec: u64) -> Result<Option<Sample>, MetricsError> {
        if text.is_empty() {
            return Ok(None);
        }
        let permille = text
            .strip_prefix("fixed=")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u16>().ok())
            .filter(|permille| *permille <= 1000)
            .ok_or_else(|| MetricsError::TestMetrics { variable: ENV_VAR, value: text.to_string() })?;
        let net_bytes_per_sec = u64::try_from(u128::from(link_capacity_bytes_per_sec) * u128::from(permille) / 1000)
            .expect("at most the link capacity, a u64");
        Ok(Some(Sample { cpu_permille: permille, net_permille: permille, net_bytes_per_sec }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_permille: u16, net_bytes: u64, elapsed_ms: u64) -> Reading {
        Reading { cpu_permille, net_bytes, elapsed_ms }
    }

    #[test]
    fn cpu_percent_becomes_bounded_permille() {
        assert_eq!(cpu_permille(0.0), 0);
        assert_eq!(cpu_permille(12.34), 123);
        assert_eq!(cpu_permille(100.0), 1000);
        assert_eq!(cpu_permille(104.0), 1000);
        assert_eq!(cpu_permille(f32::NAN), 0);
        assert_eq!(cpu_permille(-3.0), 0);
    }

    #[test]
    fn the_window_averages_cpu_by_time_and_network_by_bytes() {
        // 100 Mbit/s = 12.5 MB/s; 1.25 MB/s is 100 per-mille.
        let capacity = 12_500_000;
        let readings = [reading(200, 1_000_000, 1000), reading(600, 1_500_000, 1000)];
        let sample = fold(readings.iter().copied(), capacity);
        assert_eq!(sample.cpu_permille, 400);
        assert_eq!(sample.net_bytes_per_sec, 1_250_000);
        assert_eq!(sample.net_permille, 100);
        // Unequal intervals weigh by time.
        let readings = [reading(1000, 0, 3000), reading(0, 0, 1000)];
        assert_eq!(fold(readings.iter().copied(), capacity).cpu_permille, 750);
    }

    #[test]
    fn network_saturates_at_one_thousand_and_empty_windows_are_zero() {
        let readings = [reading(0, 100_000_000, 1000)];
        assert_eq!(fold(readings.iter().copied(), 12_500_000).net_permille, 1000);
        assert_eq!(fold(std::iter::empty(), 12_500_000), Sample::default());
    }

    #[test]
    fn the_first_sample_is_discarded_and_later_ones_are_in_range() {
        let mut sampler = Sampler::new(100, 3).unwrap();
        assert_eq!(sampler.sample(), None, "the first reading only primes the counters");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let sample = sampler.sample().expect("a second sample");
        assert!(sample.cpu_permille <= 1000 && sample.net_permille <= 1000);
    }

    #[cfg(feature = "test-misbehaviour")]
    #[test]
    fn test_metrics_read_fixed_values_and_refuse_anything_else_naming_the_variable() {
        // 100 Mbit/s = 12.5 MB/s.
        let capacity = 12_500_000;
        let cases: &[(&str, Option<(u16, u64)>)] = &[
            ("", None),
            ("fixed=100", Some((100, 1_250_000))),
            ("fixed=0", Some((0, 0))),
            ("fixed=1000", Some((1000, 12_500_000))),
            ("fixed=0400", Some((400, 5_000_000))),
        ];
        for (text, expected) in cases {
            let sample = test_metrics::parse(text, capacity).unwrap_or_else(|error| panic!("{text:?}: {error}"));
            let expected = expected.map(|(permille, net_bytes_per_sec)| Sample {
                cpu_permille: permille,
                net_permille: permille,
                net_bytes_per_sec,
            });
            assert_eq!(sample, expected, "{text:?}");
        }
        for bad in ["fixed=1001", "fixed=-1", "fixed=+5", "fixed=", "fixed", "100", "fixed=1e2", "fixed = 100", "stale"]
        {
            let error = test_metrics::parse(bad, capacity).expect_err(bad).to_string();
            assert!(error.starts_with(&format!("TINYCHAIN_TEST_METRICS={bad:?}")), "{bad:?}: {error}");
            assert!(error.contains("fixed=V"), "{bad:?}: the error says what to write: {error}");
        }
    }

    #[cfg(feature = "test-misbehaviour")]
    #[test]
    fn a_fixed_sampler_returns_its_sample_from_the_first_call_on() {
        // Built as `Sampler::new` builds it from `TINYCHAIN_TEST_METRICS=fixed=300` (the variable
        // itself is left alone: tests run on parallel threads of one process).
        let mut sampler = Sampler::new(100, 3).unwrap();
        sampler.fixed = test_metrics::parse("fixed=300", sampler.link_capacity_bytes_per_sec).unwrap();
        let expected = Sample { cpu_permille: 300, net_permille: 300, net_bytes_per_sec: 3_750_000 };
        assert_eq!(sampler.sample(), Some(expected), "no priming: the first call already answers");
        assert_eq!(sampler.sample(), Some(expected));
        assert!(sampler.readings.is_empty(), "nothing was measured");
    }
}

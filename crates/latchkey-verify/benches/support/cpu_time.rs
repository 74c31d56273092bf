//! CPU time of the benchmarking thread as a criterion measurement, shared by
//! the benchmarks of this crate (`jose`, `extractor`).
//!
//! Wall time on a busy machine counts whatever else got the core; the
//! thread's CPU time (`/proc/thread-self/schedstat`) does not. Where that
//! file cannot be read, wall time is used.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::Throughput;

/// CPU time of the calling thread in nanoseconds: the first field of
/// `/proc/thread-self/schedstat` (time spent on the CPU). Criterion runs
/// every iteration on the thread that calls `start` and `end`.
pub fn thread_cpu_nanos() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Thread CPU time, or wall time since the first call where `/proc` is missing.
pub struct CpuTime;

fn now_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    thread_cpu_nanos().unwrap_or_else(|| {
        u64::try_from(
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    })
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        now_nanos()
    }
    fn end(&self, start: u64) -> u64 {
        now_nanos().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// CPU nanoseconds shown as µs or ms; throughput as tokens per CPU-second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical_ns < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_op = match *throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
        } as f64;
        values.iter_mut().for_each(|v| *v = per_op * 1e9 / *v);
        "tokens/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

//! Small statistics helpers: percentiles, sliding-window checks, peak memory.

use std::time::Duration;

use tokio::time::Instant;

/// The p-th percentile (0..=100) of durations, in milliseconds.
pub fn percentile_ms(values: &mut [Duration], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)].as_secs_f64() * 1000.0
}

/// How many arrivals start a window of `period` holding more than `limit` (sorted instants).
/// 0 means no sliding window was ever over the limit.
pub fn windows_over_limit(sorted: &[Instant], limit: usize, period: Duration) -> usize {
    if sorted.len() <= limit {
        return 0;
    }
    (limit..sorted.len())
        .filter(|&i| sorted[i].duration_since(sorted[i - limit]) < period)
        .count()
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    read_status_kib("VmHWM:") / 1024.0
}

/// Current resident memory (VmRSS), in MiB.
pub fn rss_mib() -> f64 {
    read_status_kib("VmRSS:") / 1024.0
}

fn read_status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

//! The human-readable values of Olla's pages ("1.21 KB", "95.5%", "120ms", "5s ago",
//! "2h30m15s"), written as Olla's `pkg/format` writes them, so scripts that read them
//! get the same text. Pages add the raw numbers beside them.

/// Bytes in binary units: "512 B", "1.21 KB", "3.40 GB".
pub(super) fn bytes(n: u64) -> String {
    const UNIT: u64 = 1024;
    if n < UNIT {
        return format!("{n} B");
    }
    let (mut div, mut exp) = (UNIT, 0);
    let mut rest = n / UNIT;
    while rest >= UNIT && exp < 4 {
        div *= UNIT;
        exp += 1;
        rest /= UNIT;
    }
    let units = ["KB", "MB", "GB", "TB", "PB"];
    format!("{:.2} {}", n as f64 / div as f64, units[exp])
}

/// A percentage: "0%", "100%", else one decimal ("95.5%").
pub(super) fn percentage(value: f64) -> String {
    if value == 0.0 {
        "0%".into()
    } else if value == 100.0 {
        "100%".into()
    } else {
        format!("{value:.1}%")
    }
}

/// A latency in whole milliseconds: "0ms", "120ms", "1.5s".
pub(super) fn latency(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// Time since an event `ago_ms` milliseconds back: "7s ago", "5m ago", "3h ago",
/// "2d ago"; "never" for no event.
pub(super) fn time_ago(ago_ms: Option<u64>) -> String {
    let Some(ms) = ago_ms else {
        return "never".into();
    };
    let secs = ms as f64 / 1000.0;
    let shown = if secs < 60.0 {
        format!("{}s", secs as u64)
    } else if secs < 3600.0 {
        format!("{:.0}m", secs / 60.0)
    } else if secs < 86_400.0 {
        format!("{:.0}h", secs / 3600.0)
    } else {
        format!("{:.0}d", secs / 86_400.0)
    };
    shown + " ago"
}

/// An uptime: "45s", "3m7s", "2h30m15s" (below a second, Go's duration text: "250ms").
pub(super) fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_olla_writes_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1240), "1.21 KB");
        assert_eq!(bytes(5 << 20), "5.00 MB");
        assert_eq!(bytes(u64::MAX), "16384.00 PB");
        assert_eq!(percentage(0.0), "0%");
        assert_eq!(percentage(100.0), "100%");
        assert_eq!(percentage(200.0 / 3.0), "66.7%");
        assert_eq!(latency(0), "0ms");
        assert_eq!(latency(7), "7ms");
        assert_eq!(latency(1530), "1.5s");
        assert_eq!(time_ago(None), "never");
        assert_eq!(time_ago(Some(7_900)), "7s ago");
        assert_eq!(time_ago(Some(300_000)), "5m ago");
        assert_eq!(time_ago(Some(3 * 86_400_000)), "3d ago");
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(187_000), "3m7s");
        assert_eq!(duration(9_015_000), "2h30m15s");
    }
}

//! What the bench reads from `/proc`: CPU time (utime + stime, in clock ticks) of a process
//! and of every `postgres` process, resident memory, the load average.

use std::time::Duration;

/// CPU time of one process from its `/proc/<pid>/stat` line: (utime + stime, cutime + cstime)
/// in clock ticks. The command name (in parentheses) may hold spaces, so fields are counted
/// from the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some((n(14)? + n(15)?, n(16)? + n(17)?))
}

/// The command name of a `/proc/<pid>/stat` line.
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when that cannot be run).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// CPU time (user + system, all threads) a process has used so far, in ticks.
pub fn process_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat_cpu(&s))
        .map(|(own, _)| own)
        .unwrap_or(0)
}

/// CPU time of every process named `postgres`, including its exited children that it has
/// reaped (connections that closed): Σ utime + stime + cutime + cstime, in ticks.
pub fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| parse_stat_comm(s) == Some("postgres"))
        .filter_map(|s| parse_stat_cpu(&s))
        .map(|(own, children)| own + children)
        .sum()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`), 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse_status_kib(&status, field)
}

/// A `kB` field of a `/proc/<pid>/status` text.
pub fn parse_status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The three load averages, as `/proc/loadavg` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "(unknown)".into())
}

/// Ticks → duration.
pub fn ticks_to(ticks: u64, per_second: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_gives_cpu_ticks_even_with_spaces_in_the_name() {
        // A real line's shape; the name holds a space and a parenthesis.
        let line = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 89 10 20 0 9 0 1000 100000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu(line), Some((1234 + 567, 89 + 10)));
        assert_eq!(parse_stat_comm(line), Some("tokio (rt) w"));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_fields_are_read_by_exact_name() {
        let s = "Name:\therald\nVmHWM:\t   71234 kB\nVmRSS:\t   53000 kB\nVmRSSx:\t 1 kB\n";
        assert_eq!(parse_status_kib(s, "VmRSS"), 53000);
        assert_eq!(parse_status_kib(s, "VmHWM"), 71234);
        assert_eq!(parse_status_kib(s, "VmSwap"), 0);
    }

    #[test]
    fn own_process_has_a_readable_stat() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        assert!(parse_stat_cpu(&stat).is_some());
        assert!(status_kib(me, "VmRSS") > 0);
        assert_eq!(ticks_to(250, 100), Duration::from_millis(2500));
    }
}

//! Facts about this process from `/proc` (Linux): resident memory, CPU time, threads, open
//! files. Missing facts (another OS, a restricted `/proc`) are reported as `None`.

use serde::Serialize;

/// The facts, each `null` when `/proc` does not give it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProcessUsage {
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
    pub open_files: Option<u64>,
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU time (user + system) from `/proc/self/stat`, whose fields 14 and 15 are in clock
/// ticks; Linux reports them at 100 per second for user space.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

pub fn usage() -> ProcessUsage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    ProcessUsage {
        rss_bytes: status_field(&status, "VmRSS:").map(|kb| kb * 1024),
        cpu_seconds: cpu_seconds(),
        threads: status_field(&status, "Threads:"),
        open_files: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
    }
}

/// Caps glibc's malloc arenas at two (unless `MALLOC_ARENA_MAX` says otherwise). By default
/// glibc gives busy threads arenas of their own and keeps their freed memory, which with
/// tokend's worker and blocking threads grows a daemon holding 10k tokens from under 60 MB
/// to over 80 MB without any gain in speed.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        const M_ARENA_MAX: libc::c_int = -8;
        // SAFETY: mallopt only changes allocator tuning; it is called once at start-up,
        // before the worker threads exist.
        unsafe {
            libc::mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Marks the daemon non-dumpable (`PR_SET_DUMPABLE` 0): no core file, and no other process
/// of the same user (a login program, a captcha solver, anything else the user runs) may read
/// `/proc/<tokend>/environ` or `mem`, where the secret key and the tokens live. A failure is
/// logged, not fatal: the daemon is as safe as it was without it.
pub fn forbid_dumps() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes a plain integer and touches no memory of ours.
        let done = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if done != 0 {
            log::warn!(
                "event=dumpable_not_cleared error=\"{}\"",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let usage = super::usage();
        assert!(usage.rss_bytes.unwrap() > 1024 * 1024);
        assert!(usage.threads.unwrap() >= 1);
        assert!(usage.open_files.unwrap() >= 3);
        assert!(usage.cpu_seconds.is_some());
    }
}

//! Recognising the few kinds of record text the router treats specially: netfilter LOG lines
//! and the OOM report block. Pure byte-slice functions.

/// The `IN=` and `OUT=` device names of a netfilter LOG line (`nf_log_dump_packet_common`
/// prints `"%sIN=%s OUT=%s "` after the rule's prefix), or `None` if `text` is not one.
pub fn netfilter_devices(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut from = 0;
    while let Some(pos) = find(&text[from..], b"IN=") {
        let start = from + pos + 3;
        let rest = &text[start..];
        let in_end = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
        let indev = &rest[..in_end];
        if let Some(after) = rest[in_end..].strip_prefix(b" OUT=") {
            let out_end = after.iter().position(|&c| c == b' ').unwrap_or(after.len());
            return Some((indev, &after[..out_end]));
        }
        from = start;
    }
    None
}

/// Whether `text` looks like a netfilter LOG line.
pub fn is_netfilter(text: &[u8]) -> bool {
    netfilter_devices(text).is_some()
}

/// First line of an OOM report: `"<comm> invoked oom-killer: gfp_mask=…"` (`dump_header`).
pub fn is_oom_start(text: &[u8]) -> bool {
    find(text, b" invoked oom-killer: ").is_some()
}

/// Last line of an OOM report: `"Memory cgroup out of memory: Killed process N (comm) …"` or
/// `"Out of memory: Killed process N (comm) …"` (`__oom_kill_process`).
pub fn is_oom_kill(text: &[u8]) -> bool {
    find(text, b"Killed process ").is_some()
}

/// The pid in `"oom_reaper: reaped process N (comm), …"`, printed later by the `oom_reaper`
/// kernel thread.
pub fn oom_reaper_pid(text: &[u8]) -> Option<u32> {
    let rest = text.strip_prefix(b"oom_reaper: reaped process ")?;
    let end = rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netfilter_lines() {
        let t = b"kmsgfs-A-IN IN=vA OUT= MAC=aa:bb SRC=10.0.0.2 DST=10.0.0.1 LEN=84";
        assert_eq!(netfilter_devices(t), Some((&b"vA"[..], &b""[..])));
        let t = b"A-OUT IN= OUT=vA SRC=10.0.0.1";
        assert_eq!(netfilter_devices(t), Some((&b""[..], &b"vA"[..])));
        // A prefix without a trailing space.
        let t = b"xIN=lo OUT=lo SRC=127.0.0.1";
        assert_eq!(netfilter_devices(t), Some((&b"lo"[..], &b"lo"[..])));
        // The prefix itself contains "IN=".
        let t = b"MYIN=1 IN=eth0 OUT= SRC=1";
        assert_eq!(netfilter_devices(t), Some((&b"eth0"[..], &b""[..])));
        assert!(!is_netfilter(b"eth0: link up, IN=nothing"));
        assert!(!is_netfilter(b"hello"));
    }

    #[test]
    fn oom_lines() {
        assert!(is_oom_start(
            b"stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0"
        ));
        assert!(!is_oom_start(b"invoked oom-killer"));
        assert!(is_oom_kill(
            b"Memory cgroup out of memory: Killed process 1234 (victim) total-vm:1kB"
        ));
        assert!(is_oom_kill(b"Out of memory: Killed process 1 (x)"));
        assert_eq!(
            oom_reaper_pid(b"oom_reaper: reaped process 4321 (victim), now anon-rss:0kB"),
            Some(4321)
        );
        assert_eq!(oom_reaper_pid(b"oom_reaper: reaped process x"), None);
        assert_eq!(oom_reaper_pid(b"something else"), None);
    }
}

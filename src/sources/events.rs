//! Attribution events: what the BPF source reports about each printk (which namespaces caused
//! it), as plain data decoded from the BPF ring buffer by [`super::bpf`], or built by hand in
//! tests. The router (`attribution::router`) joins them with the host records.

/// Entries kept per namespace ancestry chain (`KMSGFS_CHAIN` in `src/bpf/kmsgfs_event.h`).
pub const CHAIN: usize = 8;
/// Bytes of record text an event carries (`KMSGFS_PREFIX`).
pub const PREFIX: usize = 32;

/// The host's own namespaces: records owned by them go to the host ring only, and hierarchical
/// chains stop below them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostNs {
    /// Host network namespace inode.
    pub net: u32,
    /// Host (initial) user namespace inode.
    pub user: u32,
    /// Host (initial) pid namespace inode.
    pub pid: u32,
}

/// What fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The first fragment of a record; `id` is its printk descriptor id (seq = id − K).
    Printk,
    /// A `KERN_CONT` fragment appended to the record whose descriptor id is `id`.
    Continuation,
    /// A continuation fragment the BPF side could not link (`id` is meaningless).
    UnlinkedContinuation,
    /// `tp_btf/mark_victim`: the task fields describe the OOM victim and `cur_pid` is the task
    /// that ran the OOM killer.
    OomVictim,
}

/// Where [`Event::net`] and [`Event::net_user_chain`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetSource {
    /// The current task's network namespace.
    Task,
    /// The per-CPU "last received packet" stash (printk on an IRQ stack or in a kernel thread).
    RxStash,
    /// The `struct net` handed to `nf_log_*_packet` (fentry; exact).
    Fentry,
}

/// The eight namespace inodes of a task, as `readlink /proc/PID/ns/*` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NsSet {
    /// `net`
    pub net: u32,
    /// `user` (from the task's credentials)
    pub user: u32,
    /// `pid` (the active one)
    pub pid: u32,
    /// `pid_for_children`
    pub pid_for_children: u32,
    /// `mnt`
    pub mnt: u32,
    /// `uts`
    pub uts: u32,
    /// `ipc`
    pub ipc: u32,
    /// `cgroup`
    pub cgroup: u32,
}

/// A namespace and its ancestors, innermost first, as far as the BPF side walked: nsfs inodes,
/// and the namespace ids (`NS_GET_ID`) the BPF side read with them where the kernel has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Chain {
    inodes: [u32; CHAIN],
    /// 0: unknown.
    ns_ids: [u64; CHAIN],
    len: u8,
    /// The walk stopped at [`CHAIN`] entries before reaching the initial namespace.
    pub truncated: bool,
}

impl Chain {
    /// A chain from innermost to outermost; at most [`CHAIN`] entries are kept.
    pub fn new(inodes: &[u32], truncated: bool) -> Self {
        let mut c = Chain {
            truncated: truncated || inodes.len() > CHAIN,
            ..Chain::default()
        };
        for (slot, ino) in c.inodes.iter_mut().zip(inodes) {
            *slot = *ino;
        }
        c.len = inodes.len().min(CHAIN) as u8;
        c
    }

    /// The same chain with the namespace ids of its entries, same order (0: unknown).
    pub fn with_ns_ids(mut self, ns_ids: &[u64]) -> Self {
        for (slot, id) in self.ns_ids.iter_mut().zip(ns_ids) {
            *slot = *id;
        }
        self
    }

    /// The namespace inodes, innermost first.
    pub fn as_slice(&self) -> &[u32] {
        &self.inodes[..usize::from(self.len)]
    }

    /// The namespace id of entry `i`, if the kernel reported one.
    pub fn ns_id(&self, i: usize) -> Option<u64> {
        self.ns_ids[..usize::from(self.len)]
            .get(i)
            .copied()
            .filter(|&id| id != 0)
    }

    /// The innermost namespace, if any.
    pub fn first(&self) -> Option<u32> {
        self.as_slice().first().copied()
    }
}

/// One attribution event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What fired.
    pub kind: EventKind,
    /// Printk descriptor id (see [`EventKind`]).
    pub id: u64,
    /// `bpf_ktime_get_ns()` when the event was made (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Length of the fragment text.
    pub len: u32,
    /// The first `min(len, PREFIX)` bytes of the fragment text (the rest is unspecified).
    pub prefix: [u8; PREFIX],
    /// The task the namespaces describe (the victim for [`EventKind::OomVictim`]).
    pub pid: u32,
    /// Its thread group.
    pub tgid: u32,
    /// The current task (the OOM trigger for [`EventKind::OomVictim`]).
    pub cur_pid: u32,
    /// Its thread group.
    pub cur_tgid: u32,
    /// `comm` of the task the namespaces describe.
    pub comm: [u8; 16],
    /// Namespaces of the task.
    pub ns: NsSet,
    /// Kernfs id of the task's memory cgroup (0 if unknown).
    pub memcg_id: u64,
    /// The printk ran on an IRQ stack: hardirq, softirq or NMI (the current task is unrelated).
    pub irq_stack: bool,
    /// The current task is a kernel thread.
    pub kthread: bool,
    /// The network namespace the record is attributed to, see `net_source`.
    pub net: u32,
    /// Its namespace id (`NS_GET_ID`), 0 when the kernel has none.
    pub net_ns_id: u64,
    /// Where `net` comes from.
    pub net_source: NetSource,
    /// The user namespace owning `net`, then its ancestors.
    pub net_user_chain: Chain,
    /// Receiving device name when `net_source` is [`NetSource::RxStash`].
    pub ifname: [u8; 16],
    /// Receiving device ifindex when `net_source` is [`NetSource::RxStash`].
    pub ifindex: u32,
    /// Age of the rx stash entry in ns when it was used.
    pub rx_age_ns: u64,
    /// The task's user namespace, then its ancestors.
    pub user_chain: Chain,
    /// The task's active pid namespace, then its ancestors.
    pub pid_chain: Chain,
    /// Nesting level of the task's active pid namespace (0 = initial).
    pub pid_level: u32,
}

impl Event {
    /// A task-context printk event with everything else zero: a starting point for tests and
    /// for building events by hand.
    pub fn printk(id: u64, text: &[u8]) -> Self {
        let mut prefix = [0u8; PREFIX];
        let n = text.len().min(PREFIX);
        prefix[..n].copy_from_slice(&text[..n]);
        Event {
            kind: EventKind::Printk,
            id,
            ts_ns: 0,
            cpu: 0,
            len: u32::try_from(text.len()).unwrap_or(u32::MAX),
            prefix,
            pid: 0,
            tgid: 0,
            cur_pid: 0,
            cur_tgid: 0,
            comm: [0; 16],
            ns: NsSet::default(),
            memcg_id: 0,
            irq_stack: false,
            kthread: false,
            net: 0,
            net_ns_id: 0,
            net_source: NetSource::Task,
            net_user_chain: Chain::default(),
            ifname: [0; 16],
            ifindex: 0,
            rx_age_ns: 0,
            user_chain: Chain::default(),
            pid_chain: Chain::default(),
            pid_level: 0,
        }
    }

    /// The valid part of [`Event::prefix`].
    pub fn text_prefix(&self) -> &[u8] {
        &self.prefix[..(self.len as usize).min(PREFIX)]
    }

    /// `comm` up to its NUL.
    pub fn comm_str(&self) -> &[u8] {
        cstr(&self.comm)
    }

    /// `ifname` up to its NUL.
    pub fn ifname_str(&self) -> &[u8] {
        cstr(&self.ifname)
    }

    /// Whether `text` (a whole record) can be the record this fragment started: it is at least
    /// as long and begins with the fragment's prefix.
    pub fn matches_text(&self, text: &[u8]) -> bool {
        text.len() >= self.len as usize && text.starts_with(self.text_prefix())
    }
}

fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keeps_innermost_entries() {
        let ids: Vec<u32> = (1..=10).collect();
        let c = Chain::new(&ids, false);
        assert_eq!(c.as_slice(), &ids[..CHAIN]);
        assert!(c.truncated);
        assert_eq!(Chain::new(&[5, 6], false).first(), Some(5));
        assert_eq!(Chain::default().first(), None);
    }

    #[test]
    fn prefix_matching() {
        let ev = Event::printk(1, b"hello world");
        assert!(ev.matches_text(b"hello world"));
        assert!(ev.matches_text(b"hello world, continued"));
        assert!(!ev.matches_text(b"hello"));
        assert!(!ev.matches_text(b"jello world"));
        let long = vec![b'x'; 100];
        let ev = Event::printk(1, &long);
        assert_eq!(ev.text_prefix().len(), PREFIX);
        assert!(ev.matches_text(&long));
    }
}

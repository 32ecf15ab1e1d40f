//! Decoding the BPF ring-buffer event (`struct kmsgfs_event`, `src/bpf/kmsgfs_event.h`) into
//! the router's [`Event`].
//!
//! [`RawEvent`] mirrors the C layout; both sides assert the size and the offsets of a few
//! landmark fields, so a layout change on one side fails the build. Decoding reads each field
//! at its `offset_of!` position with `from_ne_bytes`: no `unsafe`.

use std::mem::{offset_of, size_of};

use crate::sources::events::{Chain, Event, EventKind, NetSource, NsSet, CHAIN, PREFIX};

/// `struct kmsgfs_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawEvent {
    /// Descriptor id.
    pub id: u64,
    /// Fragment text address.
    pub text_ptr: u64,
    /// `bpf_ktime_get_ns()`.
    pub ts_ns: u64,
    /// Memory cgroup kernfs id.
    pub memcg_id: u64,
    /// Age of the rx stash entry.
    pub rx_age_ns: u64,
    /// `KMSGFS_EV_*`.
    pub kind: u32,
    /// `KMSGFS_F_*`.
    pub flags: u32,
    /// Fragment length.
    pub len: u32,
    /// CPU.
    pub cpu: u32,
    /// Task pid.
    pub pid: u32,
    /// Task tgid.
    pub tgid: u32,
    /// Current pid.
    pub cur_pid: u32,
    /// Current tgid.
    pub cur_tgid: u32,
    /// Namespace inodes, `KMSGFS_NS_*` order.
    pub ns: [u32; 8],
    /// Attributed netns.
    pub net: u32,
    /// Rx ifindex.
    pub ifindex: u32,
    /// User ns chain.
    pub user_chain: [u32; CHAIN],
    /// Owner of `net`, chain.
    pub net_user_chain: [u32; CHAIN],
    /// Pid ns chain.
    pub pid_chain: [u32; CHAIN],
    /// Valid entries in `user_chain`.
    pub user_depth: u8,
    /// Valid entries in `net_user_chain`.
    pub net_user_depth: u8,
    /// Valid entries in `pid_chain`.
    pub pid_depth: u8,
    /// `KMSGFS_NET_*`.
    pub net_src: u8,
    /// Pid namespace level.
    pub pid_level: u32,
    /// Task comm.
    pub comm: [u8; 16],
    /// Rx device name.
    pub ifname: [u8; 16],
    /// Text prefix.
    pub prefix: [u8; PREFIX],
    /// Namespace id of `net` (0: the kernel has none).
    pub net_ns_id: u64,
    /// Namespace ids of `user_chain`.
    pub user_ns_ids: [u64; CHAIN],
    /// Namespace ids of `net_user_chain`.
    pub net_user_ns_ids: [u64; CHAIN],
    /// Namespace ids of `pid_chain`.
    pub pid_ns_ids: [u64; CHAIN],
}

/// `KMSGFS_EVENT_SIZE`.
pub const EVENT_SIZE: usize = 480;
const _: () = assert!(size_of::<RawEvent>() == EVENT_SIZE);
const _: () = assert!(offset_of!(RawEvent, ns) == 72);
const _: () = assert!(offset_of!(RawEvent, user_chain) == 112);
const _: () = assert!(offset_of!(RawEvent, user_depth) == 208);
const _: () = assert!(offset_of!(RawEvent, comm) == 216);
const _: () = assert!(offset_of!(RawEvent, prefix) == 248);
const _: () = assert!(offset_of!(RawEvent, net_ns_id) == 280);
const _: () = assert!(offset_of!(RawEvent, pid_ns_ids) == 416);

const EV_PRINTK: u32 = 1;
const EV_CONT: u32 = 2;
const EV_CONT_UNLINKED: u32 = 3;
const EV_VICTIM: u32 = 4;

const F_IRQ_STACK: u32 = 1 << 0;
const F_KTHREAD: u32 = 1 << 1;
const F_USER_TRUNC: u32 = 1 << 3;
const F_NETUSER_TRUNC: u32 = 1 << 4;
const F_PID_TRUNC: u32 = 1 << 5;

const NET_TASK: u8 = 0;
const NET_RX: u8 = 1;
const NET_FENTRY: u8 = 2;

/// Why a ring-buffer sample could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Wrong size.
    #[error("BPF event of {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    /// Unknown `kind`.
    #[error("BPF event of unknown kind {0}")]
    Kind(u32),
    /// Unknown `net_src`.
    #[error("BPF event with unknown net source {0}")]
    NetSource(u8),
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64s<const N: usize>(b: &[u8], off: usize) -> [u64; N] {
    std::array::from_fn(|i| u64_at(b, off + 8 * i))
}

fn u32s<const N: usize>(b: &[u8], off: usize) -> [u32; N] {
    std::array::from_fn(|i| u32_at(b, off + 4 * i))
}

fn bytes<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

fn chain(inodes: &[u32; CHAIN], ns_ids: &[u64; CHAIN], depth: u8, truncated: bool) -> Chain {
    let n = usize::from(depth).min(CHAIN);
    Chain::new(&inodes[..n], truncated).with_ns_ids(&ns_ids[..n])
}

/// Decode one ring-buffer sample.
pub fn decode(b: &[u8]) -> Result<Event, DecodeError> {
    if b.len() != EVENT_SIZE {
        return Err(DecodeError::Size(b.len()));
    }
    macro_rules! off {
        ($f:ident) => {
            offset_of!(RawEvent, $f)
        };
    }
    let kind = match u32_at(b, off!(kind)) {
        EV_PRINTK => EventKind::Printk,
        EV_CONT => EventKind::Continuation,
        EV_CONT_UNLINKED => EventKind::UnlinkedContinuation,
        EV_VICTIM => EventKind::OomVictim,
        k => return Err(DecodeError::Kind(k)),
    };
    let net_source = match b[off!(net_src)] {
        NET_TASK => NetSource::Task,
        NET_RX => NetSource::RxStash,
        NET_FENTRY => NetSource::Fentry,
        s => return Err(DecodeError::NetSource(s)),
    };
    let flags = u32_at(b, off!(flags));
    let ns: [u32; 8] = u32s(b, off!(ns));
    Ok(Event {
        kind,
        id: u64_at(b, off!(id)),
        ts_ns: u64_at(b, off!(ts_ns)),
        cpu: u32_at(b, off!(cpu)),
        len: u32_at(b, off!(len)),
        prefix: bytes(b, off!(prefix)),
        pid: u32_at(b, off!(pid)),
        tgid: u32_at(b, off!(tgid)),
        cur_pid: u32_at(b, off!(cur_pid)),
        cur_tgid: u32_at(b, off!(cur_tgid)),
        comm: bytes(b, off!(comm)),
        ns: NsSet {
            net: ns[0],
            user: ns[1],
            pid: ns[2],
            pid_for_children: ns[3],
            mnt: ns[4],
            uts: ns[5],
            ipc: ns[6],
            cgroup: ns[7],
        },
        memcg_id: u64_at(b, off!(memcg_id)),
        irq_stack: flags & F_IRQ_STACK != 0,
        kthread: flags & F_KTHREAD != 0,
        net: u32_at(b, off!(net)),
        net_source,
        net_ns_id: u64_at(b, off!(net_ns_id)),
        net_user_chain: chain(
            &u32s(b, off!(net_user_chain)),
            &u64s(b, off!(net_user_ns_ids)),
            b[off!(net_user_depth)],
            flags & F_NETUSER_TRUNC != 0,
        ),
        ifname: bytes(b, off!(ifname)),
        ifindex: u32_at(b, off!(ifindex)),
        rx_age_ns: u64_at(b, off!(rx_age_ns)),
        user_chain: chain(
            &u32s(b, off!(user_chain)),
            &u64s(b, off!(user_ns_ids)),
            b[off!(user_depth)],
            flags & F_USER_TRUNC != 0,
        ),
        pid_chain: chain(
            &u32s(b, off!(pid_chain)),
            &u64s(b, off!(pid_ns_ids)),
            b[off!(pid_depth)],
            flags & F_PID_TRUNC != 0,
        ),
        pid_level: u32_at(b, off!(pid_level)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn decodes_fields_at_their_offsets() {
        let mut b = vec![0u8; EVENT_SIZE];
        b[0..8].copy_from_slice(&0x1_0000_0042u64.to_ne_bytes());
        put32(&mut b, offset_of!(RawEvent, kind), EV_PRINTK);
        put32(
            &mut b,
            offset_of!(RawEvent, flags),
            F_IRQ_STACK | F_PID_TRUNC,
        );
        put32(&mut b, offset_of!(RawEvent, len), 5);
        put32(&mut b, offset_of!(RawEvent, ns), 4026531840);
        put32(&mut b, offset_of!(RawEvent, ns) + 4 * 7, 4026531835);
        put32(&mut b, offset_of!(RawEvent, pid_chain), 7);
        put32(&mut b, offset_of!(RawEvent, pid_chain) + 4, 8);
        b[offset_of!(RawEvent, pid_depth)] = 2;
        let ids = offset_of!(RawEvent, pid_ns_ids);
        b[ids..ids + 8].copy_from_slice(&70u64.to_ne_bytes());
        b[ids + 8..ids + 16].copy_from_slice(&80u64.to_ne_bytes());
        let net_id = offset_of!(RawEvent, net_ns_id);
        b[net_id..net_id + 8].copy_from_slice(&90u64.to_ne_bytes());
        b[offset_of!(RawEvent, net_src)] = NET_RX;
        b[offset_of!(RawEvent, comm)..][..2].copy_from_slice(b"sh");
        b[offset_of!(RawEvent, prefix)..][..5].copy_from_slice(b"hello");
        let e = decode(&b).unwrap();
        assert_eq!(e.id, 0x1_0000_0042);
        assert_eq!(e.kind, EventKind::Printk);
        assert!(e.irq_stack && !e.kthread);
        assert_eq!(e.ns.net, 4026531840);
        assert_eq!(e.ns.cgroup, 4026531835);
        assert_eq!(e.pid_chain.as_slice(), &[7, 8]);
        assert!(e.pid_chain.truncated);
        assert_eq!(e.pid_chain.ns_id(0), Some(70));
        assert_eq!(e.pid_chain.ns_id(1), Some(80));
        assert_eq!(e.user_chain.ns_id(0), None);
        assert_eq!(e.net_ns_id, 90);
        assert_eq!(e.net_source, NetSource::RxStash);
        assert_eq!(e.comm_str(), b"sh");
        assert_eq!(e.text_prefix(), b"hello");
    }

    #[test]
    fn rejects_bad_samples() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        let b = vec![0u8; EVENT_SIZE];
        assert_eq!(decode(&b), Err(DecodeError::Kind(0)));
    }
}

/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The event kmsgfs' BPF programs send to userspace, one per printk fragment and one per OOM
 * victim. Mirrored by `RawEvent` in src/sources/bpf/event.rs; both sides assert the size.
 * It carries no record text (the text comes from /dev/kmsg through the seq join), only a short
 * prefix used to verify the join and for the text + timestamp fallback.
 */
#ifndef KMSGFS_EVENT_H
#define KMSGFS_EVENT_H

#define KMSGFS_CHAIN 8   /* namespace ancestry entries kept per chain */
#define KMSGFS_PREFIX 32 /* bytes of record text kept for verification */
#define KMSGFS_NS_COUNT 8

/* kind */
#define KMSGFS_EV_PRINTK 1         /* first fragment of a record: id is its descriptor id */
#define KMSGFS_EV_CONT 2           /* continuation fragment: id is the record's descriptor id */
#define KMSGFS_EV_CONT_UNLINKED 3  /* continuation fragment that could not be linked: id is 0 */
#define KMSGFS_EV_VICTIM 4         /* tp_btf/mark_victim: task fields describe the victim */

/* flags */
#define KMSGFS_F_IRQ_STACK (1u << 0)    /* printk ran on an IRQ stack (hardirq/softirq/NMI) */
#define KMSGFS_F_KTHREAD (1u << 1)      /* current is a kernel thread (PF_KTHREAD) */
#define KMSGFS_F_ALIGNED (1u << 2)      /* text pointer is 8-byte aligned (fresh record) */
#define KMSGFS_F_USER_TRUNC (1u << 3)   /* user namespace chain longer than KMSGFS_CHAIN */
#define KMSGFS_F_NETUSER_TRUNC (1u << 4)
#define KMSGFS_F_PID_TRUNC (1u << 5)
#define KMSGFS_F_RX_VALID (1u << 6)     /* the per-CPU rx stash held a packet's netns */

/* net_src: where `net` and `net_user_chain` come from */
#define KMSGFS_NET_TASK 0   /* the current task's network namespace */
#define KMSGFS_NET_RX 1     /* the per-CPU "last received skb" stash (IRQ stack / kthread) */
#define KMSGFS_NET_FENTRY 2 /* the struct net passed to nf_log_*_packet (fentry) */

/* ns[] indices */
#define KMSGFS_NS_NET 0
#define KMSGFS_NS_USER 1
#define KMSGFS_NS_PID 2
#define KMSGFS_NS_PID_FOR_CHILDREN 3
#define KMSGFS_NS_MNT 4
#define KMSGFS_NS_UTS 5
#define KMSGFS_NS_IPC 6
#define KMSGFS_NS_CGROUP 7

struct kmsgfs_event {
	__u64 id;        /* printk descriptor id (seq = id - K), see kind */
	__u64 text_ptr;  /* address of the fragment text in the printk ring */
	__u64 ts_ns;     /* bpf_ktime_get_ns() */
	__u64 memcg_id;  /* kernfs id of the task's memory cgroup, 0 if unknown */
	__u64 rx_age_ns; /* age of the rx stash entry when used */
	__u32 kind;
	__u32 flags;
	__u32 len;       /* fragment length */
	__u32 cpu;
	__u32 pid;       /* the task the namespaces describe (the victim for EV_VICTIM) */
	__u32 tgid;
	__u32 cur_pid;   /* the current task (the OOM trigger for EV_VICTIM) */
	__u32 cur_tgid;
	__u32 ns[KMSGFS_NS_COUNT];
	__u32 net;       /* attributed network namespace, see net_src */
	__u32 ifindex;   /* rx device ifindex when net_src == KMSGFS_NET_RX */
	__u32 user_chain[KMSGFS_CHAIN];     /* task's user ns, then its ancestors */
	__u32 net_user_chain[KMSGFS_CHAIN]; /* user ns owning `net`, then its ancestors */
	__u32 pid_chain[KMSGFS_CHAIN];      /* task's active pid ns, then its ancestors */
	__u8 user_depth;
	__u8 net_user_depth;
	__u8 pid_depth;
	__u8 net_src;
	__u32 pid_level;
	char comm[16];
	char ifname[16];
	char prefix[KMSGFS_PREFIX];
	/* Namespace ids (ns_common.ns_id, NS_GET_ID; 0 on kernels without them) of `net` and of
	 * each chain entry, same index: the instance each inode named when the record was made. */
	__u64 net_ns_id;
	__u64 user_ns_ids[KMSGFS_CHAIN];
	__u64 net_user_ns_ids[KMSGFS_CHAIN];
	__u64 pid_ns_ids[KMSGFS_CHAIN];
};

#define KMSGFS_EVENT_SIZE 480

/* Per-CPU counters, summed by userspace. */
struct kmsgfs_stats {
	__u64 events;    /* events submitted */
	__u64 drops;     /* ring buffer full: event lost */
	__u64 cont;      /* continuation fragments linked */
	__u64 rx_used;   /* events that used the rx stash */
	__u64 fentry_used;
	__u64 wakeups;   /* forced wakeups (threshold reached) */
};

#endif /* KMSGFS_EVENT_H */

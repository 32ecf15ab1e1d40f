// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * kmsgfs attribution programs: which namespaces caused each kernel log record.
 *
 *  - tp_btf/console: one compact event per printk fragment, in the printk caller's context, with
 *    the descriptor id read from just before the text (seq = id - K), the caller's namespaces, the
 *    IRQ-stack and kernel-thread flags, and continuation linking.
 *  - tp_btf/netif_receive_skb: per-CPU stash of the netns of the packet being received, used for
 *    printks on an IRQ stack (netfilter LOG in softirq).
 *  - tp_btf/mark_victim: the OOM victim's namespaces and memory cgroup.
 *  - fentry/fexit nf_log_{ip,ip6,arp,netdev}_packet (optional, only when the host allows
 *    trampolines): the exact struct net of a netfilter LOG line.
 *
 * Design and measurements: docs/attribution.md.
 */
#include "kmsgfs_core.h"
#include "kmsgfs_event.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The same landmarks are asserted by RawEvent in src/sources/bpf/event.rs. */
_Static_assert(sizeof(struct kmsgfs_event) == KMSGFS_EVENT_SIZE, "event layout changed");
_Static_assert(__builtin_offsetof(struct kmsgfs_event, ns) == 72, "event layout changed");
_Static_assert(__builtin_offsetof(struct kmsgfs_event, user_chain) == 112, "event layout changed");
_Static_assert(__builtin_offsetof(struct kmsgfs_event, user_depth) == 208, "event layout changed");
_Static_assert(__builtin_offsetof(struct kmsgfs_event, comm) == 216, "event layout changed");
_Static_assert(__builtin_offsetof(struct kmsgfs_event, prefix) == 248, "event layout changed");

#define PF_KTHREAD 0x00200000
#define NF_STACK_DEPTH 4

/* Set by the loader before load. */
const volatile u64 cfg_thread_size = 16384;   /* THREAD_SIZE: the task stack size */
const volatile u64 cfg_wakeup_bytes = 262144; /* force a wakeup above this much unread data */
const volatile u32 cfg_use_fentry = 0;        /* consult the nf_log override stack */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct kmsgfs_stats);
} stats SEC(".maps");

/* The previous fragment on this CPU, for continuation linking (KERN_CONT). */
struct last_frag {
	u64 end; /* text_ptr + len of the previous fragment */
	u64 id;  /* descriptor id of the record it belongs to */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct last_frag);
} frags SEC(".maps");

/* The network namespace of the packet last received on this CPU. */
struct rx_stash {
	u64 ts_ns;
	u64 net_ns_id;
	u64 user_ns_ids[KMSGFS_CHAIN];
	u32 net;
	u32 ifindex;
	u32 user_chain[KMSGFS_CHAIN];
	u8 user_depth;
	u8 trunc;
	u8 pad[6];
	char ifname[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct rx_stash);
} rx SEC(".maps");

/* The struct net of the nf_log backend calls active on a task (fentry design). */
struct nf_entry {
	u32 net;
	u8 user_depth;
	u8 trunc;
	u8 pad[2];
	u32 user_chain[KMSGFS_CHAIN];
	u64 net_ns_id;
	u64 user_ns_ids[KMSGFS_CHAIN];
};

struct nf_stack {
	u32 depth;
	u32 pad;
	struct nf_entry entries[NF_STACK_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, struct nf_stack);
} nfstack SEC(".maps");

static __always_inline struct kmsgfs_stats *get_stats(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

/* Walk a user namespace and its ancestors (inodes and ids). Returns true if the chain was cut. */
static __always_inline bool user_chain(struct user_namespace *u, u32 *chain, u64 *ids, u8 *depth)
{
	u8 n = 0;
	for (int i = 0; i < KMSGFS_CHAIN; i++) {
		if (!u)
			break;
		chain[i] = BPF_CORE_READ(u, ns.inum);
		ids[i] = NS_ID(u);
		n++;
		u = BPF_CORE_READ(u, parent);
	}
	*depth = n;
	return u != NULL;
}

/* Fill the namespace, chain and cgroup fields describing `task`. */
static __always_inline void fill_task(struct kmsgfs_event *e, struct task_struct *task)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	struct user_namespace *uns = BPF_CORE_READ(task, cred, user_ns);
	struct pid *pid = BPF_CORE_READ(task, thread_pid);

	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	bpf_probe_read_kernel(e->comm, sizeof(e->comm), &task->comm);

	if (nsp) {
		e->ns[KMSGFS_NS_NET] = BPF_CORE_READ(nsp, net_ns, ns.inum);
		e->ns[KMSGFS_NS_PID_FOR_CHILDREN] = BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
		e->ns[KMSGFS_NS_MNT] = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
		e->ns[KMSGFS_NS_UTS] = BPF_CORE_READ(nsp, uts_ns, ns.inum);
		e->ns[KMSGFS_NS_IPC] = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
		e->ns[KMSGFS_NS_CGROUP] = BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	}
	e->ns[KMSGFS_NS_USER] = BPF_CORE_READ(uns, ns.inum);
	if (user_chain(uns, e->user_chain, e->user_ns_ids, &e->user_depth))
		e->flags |= KMSGFS_F_USER_TRUNC;

	/* Active pid namespace: thread_pid->numbers[level].ns (variable index: probe read). */
	if (pid) {
		u32 level = BPF_CORE_READ(pid, level);
		struct pid_namespace *pns = NULL;
		e->pid_level = level;
		bpf_probe_read_kernel(&pns, sizeof(pns), &pid->numbers[level & 63].ns);
		e->ns[KMSGFS_NS_PID] = BPF_CORE_READ(pns, ns.inum);
		u8 n = 0;
		for (int i = 0; i < KMSGFS_CHAIN; i++) {
			if (!pns)
				break;
			e->pid_chain[i] = BPF_CORE_READ(pns, ns.inum);
			e->pid_ns_ids[i] = NS_ID(pns);
			n++;
			pns = BPF_CORE_READ(pns, parent);
		}
		e->pid_depth = n;
		if (pns)
			e->flags |= KMSGFS_F_PID_TRUNC;
	}

	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int idx = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct css_set *cs = BPF_CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;
		if (cs && idx >= 0 && idx < 64) {
			bpf_probe_read_kernel(&css, sizeof(css), &cs->subsys[idx]);
			if (css)
				e->memcg_id = BPF_CORE_READ(css, cgroup, kn, id);
		}
	}
}

/* Use the task's own network namespace. */
static __always_inline void net_from_task(struct kmsgfs_event *e, struct task_struct *task)
{
	struct net *net = BPF_CORE_READ(task, nsproxy, net_ns);
	e->net_src = KMSGFS_NET_TASK;
	e->net = e->ns[KMSGFS_NS_NET];
	if (net)
		e->net_ns_id = NS_ID(net);
	if (net && user_chain(BPF_CORE_READ(net, user_ns), e->net_user_chain, e->net_user_ns_ids,
			      &e->net_user_depth))
		e->flags |= KMSGFS_F_NETUSER_TRUNC;
}

/*
 * Submit without waking the reader, except when this event makes the unread data cross a
 * multiple of cfg_wakeup_bytes: a reader that drains on wakeups (and periodically) never falls
 * far behind, and a stalled reader costs one wakeup per cfg_wakeup_bytes, not one per event.
 */
static __always_inline void submit(struct kmsgfs_event *e, struct kmsgfs_stats *st)
{
	u64 flags = BPF_RB_NO_WAKEUP;
	u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	u64 step = cfg_wakeup_bytes ? cfg_wakeup_bytes : 1;
	u64 rec = sizeof(*e) + 8; /* ring buffer record header */

	if (avail >= step && avail >= rec && avail / step != (avail - rec) / step) {
		flags = BPF_RB_FORCE_WAKEUP;
		st->wakeups++;
	}
	st->events++;
	bpf_ringbuf_submit(e, flags);
}

SEC("tp_btf/console")
int kmsgfs_console(u64 *ctx)
{
	u64 text = ctx[0];
	u64 len = ctx[1];
	u32 zero = 0;
	struct kmsgfs_stats *st = get_stats();
	struct last_frag *last = bpf_map_lookup_elem(&frags, &zero);
	struct kmsgfs_event *e;
	struct task_struct *task;

	if (!st || !last)
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st->drops++;
		/* Keep continuation linking consistent even when the event is lost. */
		if (!(last->end && text == last->end))
			bpf_probe_read_kernel(&last->id, sizeof(last->id), (void *)(text - 8));
		last->end = text + len;
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));

	e->text_ptr = text;
	e->len = len;
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	if ((text & 7) == 0)
		e->flags |= KMSGFS_F_ALIGNED;

	if (last->end && text == last->end) {
		/* Appended to the previous record (prb_reserve_in_last): same descriptor. */
		e->kind = KMSGFS_EV_CONT;
		e->id = last->id;
		st->cont++;
	} else if ((text & 7) == 0) {
		/* struct prb_data_block { unsigned long id; char data[]; }: text == &data[0]. */
		e->kind = KMSGFS_EV_PRINTK;
		bpf_probe_read_kernel(&e->id, sizeof(e->id), (void *)(text - 8));
		last->id = e->id;
	} else {
		e->kind = KMSGFS_EV_CONT_UNLINKED;
		last->id = 0;
	}
	last->end = text + len;
	bpf_probe_read_kernel(e->prefix, sizeof(e->prefix), (void *)text);

	task = bpf_get_current_task_btf();
	e->cur_pid = task->pid;
	e->cur_tgid = task->tgid;
	if (task->flags & PF_KTHREAD)
		e->flags |= KMSGFS_F_KTHREAD;
	{
		/* ctx lives on the current kernel stack: inside the task stack means task context. */
		u64 lo = (u64)task->stack;
		u64 here = (u64)ctx;
		if (!(here >= lo && here < lo + cfg_thread_size))
			e->flags |= KMSGFS_F_IRQ_STACK;
	}

	fill_task(e, task);

	if (cfg_use_fentry) {
		u64 key = (u64)task;
		struct nf_stack *s = bpf_map_lookup_elem(&nfstack, &key);
		if (s && s->depth > 0 && s->depth <= NF_STACK_DEPTH) {
			struct nf_entry *top = &s->entries[(s->depth - 1) & (NF_STACK_DEPTH - 1)];
			e->net_src = KMSGFS_NET_FENTRY;
			e->net = top->net;
			e->net_user_depth = top->user_depth;
			if (top->trunc)
				e->flags |= KMSGFS_F_NETUSER_TRUNC;
			__builtin_memcpy(e->net_user_chain, top->user_chain, sizeof(e->net_user_chain));
			e->net_ns_id = top->net_ns_id;
			__builtin_memcpy(e->net_user_ns_ids, top->user_ns_ids, sizeof(e->net_user_ns_ids));
			st->fentry_used++;
			submit(e, st);
			return 0;
		}
	}

	if (e->flags & (KMSGFS_F_IRQ_STACK | KMSGFS_F_KTHREAD)) {
		struct rx_stash *r = bpf_map_lookup_elem(&rx, &zero);
		if (r && r->net) {
			e->flags |= KMSGFS_F_RX_VALID;
			e->net_src = KMSGFS_NET_RX;
			e->net = r->net;
			e->ifindex = r->ifindex;
			e->rx_age_ns = e->ts_ns - r->ts_ns;
			e->net_user_depth = r->user_depth;
			if (r->trunc)
				e->flags |= KMSGFS_F_NETUSER_TRUNC;
			__builtin_memcpy(e->net_user_chain, r->user_chain, sizeof(e->net_user_chain));
			e->net_ns_id = r->net_ns_id;
			__builtin_memcpy(e->net_user_ns_ids, r->user_ns_ids, sizeof(e->net_user_ns_ids));
			__builtin_memcpy(e->ifname, r->ifname, sizeof(e->ifname));
			st->rx_used++;
			submit(e, st);
			return 0;
		}
	}

	net_from_task(e, task);
	submit(e, st);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int kmsgfs_rx(u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	u32 zero = 0;
	struct rx_stash *r = bpf_map_lookup_elem(&rx, &zero);
	struct net_device *dev;
	struct net *net;

	if (!r)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (!dev)
		return 0;
	net = BPF_CORE_READ(dev, nd_net.net);
	r->ts_ns = bpf_ktime_get_ns();
	r->net = BPF_CORE_READ(net, ns.inum);
	r->net_ns_id = NS_ID(net);
	r->ifindex = BPF_CORE_READ(dev, ifindex);
	bpf_probe_read_kernel(r->ifname, sizeof(r->ifname), &dev->name);
	r->trunc = user_chain(BPF_CORE_READ(net, user_ns), r->user_chain, r->user_ns_ids,
			      &r->user_depth);
	return 0;
}

SEC("tp_btf/mark_victim")
int kmsgfs_victim(u64 *ctx)
{
	struct task_struct *victim = (struct task_struct *)ctx[0];
	struct task_struct *cur = bpf_get_current_task_btf();
	struct kmsgfs_stats *st = get_stats();
	struct kmsgfs_event *e;

	if (!st)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st->drops++;
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = KMSGFS_EV_VICTIM;
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->cur_pid = cur->pid;
	e->cur_tgid = cur->tgid;
	fill_task(e, victim);
	net_from_task(e, victim);
	/* An OOM report is rare and someone may be waiting for it: wake the reader now. */
	st->events++;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* fentry/fexit on the nf_log backends: push/pop the struct net of the LOG call. */
static __always_inline int nf_push(struct net *net)
{
	u64 key = (u64)bpf_get_current_task();
	struct nf_stack *s = bpf_map_lookup_elem(&nfstack, &key);
	struct nf_stack fresh = {};
	struct nf_entry *en;

	if (!s) {
		bpf_map_update_elem(&nfstack, &key, &fresh, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&nfstack, &key);
		if (!s)
			return 0;
	}
	if (s->depth >= NF_STACK_DEPTH) {
		s->depth++; /* keep push/pop balanced; the console program ignores overflow */
		return 0;
	}
	en = &s->entries[s->depth & (NF_STACK_DEPTH - 1)];
	en->net = BPF_CORE_READ(net, ns.inum);
	en->net_ns_id = NS_ID(net);
	en->trunc = user_chain(BPF_CORE_READ(net, user_ns), en->user_chain, en->user_ns_ids,
			       &en->user_depth);
	s->depth++;
	return 0;
}

static __always_inline int nf_pop(void)
{
	u64 key = (u64)bpf_get_current_task();
	struct nf_stack *s = bpf_map_lookup_elem(&nfstack, &key);

	if (!s)
		return 0;
	if (s->depth > 1)
		s->depth--;
	else
		bpf_map_delete_elem(&nfstack, &key);
	return 0;
}

SEC("fentry/nf_log_ip_packet")
int BPF_PROG(kmsgfs_nf_ip_in, struct net *net)
{
	return nf_push(net);
}

SEC("fexit/nf_log_ip_packet")
int BPF_PROG(kmsgfs_nf_ip_out, struct net *net)
{
	return nf_pop();
}

SEC("fentry/nf_log_ip6_packet")
int BPF_PROG(kmsgfs_nf_ip6_in, struct net *net)
{
	return nf_push(net);
}

SEC("fexit/nf_log_ip6_packet")
int BPF_PROG(kmsgfs_nf_ip6_out, struct net *net)
{
	return nf_pop();
}

SEC("fentry/nf_log_arp_packet")
int BPF_PROG(kmsgfs_nf_arp_in, struct net *net)
{
	return nf_push(net);
}

SEC("fexit/nf_log_arp_packet")
int BPF_PROG(kmsgfs_nf_arp_out, struct net *net)
{
	return nf_pop();
}

SEC("fentry/nf_log_netdev_packet")
int BPF_PROG(kmsgfs_nf_netdev_in, struct net *net)
{
	return nf_push(net);
}

SEC("fexit/nf_log_netdev_packet")
int BPF_PROG(kmsgfs_nf_netdev_out, struct net *net)
{
	return nf_pop();
}

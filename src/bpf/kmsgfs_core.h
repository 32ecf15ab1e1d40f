/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * A minimal, hand-written CO-RE header for kmsgfs' BPF programs.
 *
 * Only the kernel types and fields the programs read are declared. Every record type carries
 * `preserve_access_index`, so clang emits CO-RE relocations and libbpf resolves the real
 * offsets against the running kernel's BTF (/sys/kernel/btf/vmlinux) at load time. The field
 * order and the array sizes here do not have to match the kernel; the field names and kinds do.
 *
 * Field paths used (see docs/attribution.md, "CO-RE field paths"):
 *   task->nsproxy->{net_ns,uts_ns,ipc_ns,mnt_ns,pid_ns_for_children,cgroup_ns}->ns.inum
 *   task->cred->user_ns->{ns.inum,parent}
 *   task->thread_pid->{level,numbers[level].ns}, pid_namespace->{ns.inum,parent}
 *   task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id
 *   task->{stack,flags,pid,tgid,comm}
 *   skb->dev->{nd_net.net,ifindex,name}, net->{ns.inum,user_ns}
 */
#ifndef KMSGFS_CORE_H
#define KMSGFS_CORE_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef int pid_t;
typedef unsigned int uid_t;
typedef _Bool bool;
#define true 1
#define false 0

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
	/* Linux 6.18+: the namespace's 64-bit id, what ioctl(NS_GET_ID) returns. It sits in an
	 * anonymous struct inside an anonymous union; CO-RE matches it through both. Read it only
	 * through NS_ID() below, which gives 0 on kernels without it. */
	u64 ns_id;
};

struct user_namespace {
	struct user_namespace *parent;
	struct ns_common ns;
};

struct pid_namespace {
	unsigned int level;
	struct pid_namespace *parent;
	struct ns_common ns;
};

struct net {
	struct user_namespace *user_ns;
	struct ns_common ns;
};

struct uts_namespace {
	struct ns_common ns;
};

struct ipc_namespace {
	struct ns_common ns;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct cgroup_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct uts_namespace *uts_ns;
	struct ipc_namespace *ipc_ns;
	struct mnt_namespace *mnt_ns;
	struct pid_namespace *pid_ns_for_children;
	struct net *net_ns;
	struct cgroup_namespace *cgroup_ns;
};

struct cred {
	struct user_namespace *user_ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[];
};

struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	struct cgroup_subsys_state *subsys[1];
};

struct task_struct {
	unsigned int flags;
	void *stack;
	pid_t pid;
	pid_t tgid;
	struct pid *thread_pid;
	const struct cred *cred;
	char comm[16];
	struct nsproxy *nsproxy;
	struct css_set *cgroups;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
};

struct sk_buff {
	struct net_device *dev;
};

#pragma clang attribute pop

/*
 * The id of namespace `p` (any struct with a `struct ns_common ns`), 0 when the kernel has no
 * ns_common.ns_id. nsfs inode numbers are reused as soon as a namespace is freed; the id is
 * never reused, so userspace binds a ring to it (docs/security.md T10).
 */
#define NS_ID(p) \
	(bpf_core_field_exists(struct ns_common, ns_id) ? BPF_CORE_READ(p, ns.ns_id) : 0)

/* Only the name matters: the value is relocated with bpf_core_enum_value(). */
enum cgroup_subsys_id {
	memory_cgrp_id = 0,
};

#endif /* KMSGFS_CORE_H */

// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Start-up feature probe: can this host load a BPF trampoline (fentry) program at all?
 * Some hosts refuse every fentry/fexit/fmod_ret/lsm program with EPERM and an empty verifier
 * log (docs/attribution.md, "Feature probes"). The program is only loaded, never attached.
 */
#include "kmsgfs_core.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("fentry/vfs_read")
int BPF_PROG(kmsgfs_probe_fentry)
{
	return 0;
}

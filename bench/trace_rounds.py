#!/usr/bin/env python3
"""Rounds of a depth-N O_DIRECT read workload, from a system-wide perf trace.

  perf record -a -e irq:irq_handler_entry,block:block_rq_issue,block:block_rq_complete,\\
syscalls:sys_enter_io_uring_enter,syscalls:sys_exit_io_uring_enter,\\
syscalls:sys_enter_rt_sigprocmask,syscalls:sys_exit_rt_sigprocmask,sched:sched_switch -- CMD
  perf script --ns > trace.txt
  python3 bench/trace_rounds.py trace.txt COMM [IRQNAME]

A virtio disk that serves its queue one request after the other and
signals once when it is empty makes the workload run in rounds: an
interrupt completes a batch, the waiting thread wakes and sends new
requests.  For each interrupt (IRQNAME, default virtio1-req: see
/proc/interrupts) this prints the medians of: the interrupt handler's
completions, the time from the last completion to the first new request
(the host's part of the idle gap, which is on the critical path), the
submit rate within the round and the time between interrupts; then the
steps of the gap taken by the thread(s) named COMM (randread, fio, ...):
wake-up, return of the waiting system call, other system calls, first
request.  The middle 80 % of the rounds count.  (docs/benchmarks.md, "The
libaio row: where the time goes".)
"""
import re
import statistics
import sys

LINE = re.compile(r'^\s*(\S+)\s+(\d+)\s+\[\d+\]\s+(\d+\.\d+):\s+(\S+):(.*)')


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    path, comm = sys.argv[1], sys.argv[2]
    irqname = sys.argv[3] if len(sys.argv) > 3 else "virtio1-req"
    ev = []
    with open(path) as f:
        for line in f:
            m = LINE.search(line)
            if m:
                ev.append((float(m.group(3)), m.group(4).split(":")[1], m.group(1), m.group(5)))
    rounds, steps = [], {}
    i, n = 0, len(ev)
    while i < n:
        t, e, c, rest = ev[i]
        if e != "irq_handler_entry" or irqname not in rest:
            i += 1
            continue
        j, lastc, ncmp, seq = i + 1, None, 0, []
        while j < n and not (ev[j][1] == "block_rq_issue" and " RS " in ev[j][3]):
            tj, ej, cj, rj = ev[j]
            if ej == "block_rq_complete" and " RS " in rj:
                lastc, ncmp = tj, ncmp + 1
            elif lastc and ej == "sched_switch" and ("next_comm=" + comm) in rj:
                seq.append((tj, "switched in"))
            elif lastc and cj.startswith(comm) and ej.startswith("sys_"):
                seq.append((tj, ej))
            j += 1
        if j >= n:
            break
        if lastc is None:       # nothing of ours completed: not a round
            i = j
            continue
        first = ev[j][0]
        k, last, nreq = j, first, 0
        while k < n and not (ev[k][1] == "irq_handler_entry" and irqname in ev[k][3]):
            if ev[k][1] == "block_rq_issue" and " RS " in ev[k][3]:
                last, nreq = ev[k][0], nreq + 1
            k += 1
        rounds.append({"irq": t, "lastc": lastc, "ncmp": ncmp, "first": first, "last": last,
                       "nreq": nreq})
        if seq and seq[0][1] == "switched in":
            prev, pname = lastc, "last completion"
            for tj, nm in seq + [(first, "first request")]:
                steps.setdefault(f"{pname} -> {nm}", []).append(1e6 * (tj - prev))
                prev, pname = tj, nm
        i = j
    cut = len(rounds) // 10
    rs = rounds[cut:len(rounds) - cut] if cut else rounds
    if len(rs) < 2:
        print("no rounds found")
        return 1

    def med(f):
        return statistics.median([f(r) for r in rs])

    gaps = [1e6 * (rs[k + 1]["irq"] - rs[k]["irq"]) for k in range(len(rs) - 1)]
    print(f"rounds {len(rs)}: completions per interrupt {med(lambda r: r['ncmp']):.0f}, "
          f"requests per round {med(lambda r: r['nreq']):.0f}; "
          f"irq -> last completion {1e6 * med(lambda r: r['lastc'] - r['irq']):.1f} us, "
          f"last completion -> first request {1e6 * med(lambda r: r['first'] - r['lastc']):.1f} us, "
          f"between requests {1e6 * med(lambda r: (r['last'] - r['first']) / max(1, r['nreq'] - 1)):.2f} us, "
          f"irq -> irq {statistics.median(gaps):.0f} us")
    for k, v in sorted(steps.items(), key=lambda kv: -len(kv[1])):
        if len(v) >= len(rs) // 5:
            print(f"  {k:55} {statistics.median(v):7.2f} us  (n={len(v)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

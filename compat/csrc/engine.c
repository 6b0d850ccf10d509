/* The syslet engine.  See engine.h for the API, docs/design.md for the
 * architecture and docs/translation.md for how atoms become io_uring SQEs.
 *
 * One mutex per context guards all engine state (syslet table, liburing's
 * submission and completion sides, the ring producer index).  Kernel waits
 * (us_wait / us_pool_wait) happen without it: a caller that waits for its
 * own results reaps them itself; the driver thread reaps when nobody waits.
 *
 * The parts below are one translation unit, in this order (each uses only
 * what the ones before it define), so the hot paths inline across them:
 *
 *   engine/internal.h   constants, struct member / syslet / sl_ctx
 *   engine/sysclass.c   which calls are refused, never block, translate exactly
 *   engine/abi.c        atom decoding (the personality codecs)
 *   engine/syslet.c     syslet table, finish, publishing to the ring
 *   engine/native.c     native calls, RWF_NOWAIT tries, the fd-kind cache
 *   engine/plan.c       planning linked segments
 *   engine/run.c        advancing syslets, submitting, completions
 *   engine/driver.c     waiting callers and the driver thread
 *   engine/ctx.c        context lifetime, register, counters, cancel
 *   engine/exec.c       the general exec path and batches
 *   engine/fastpath.c   the exec fast path
 *   engine/wait.c       waiting for ring entries
 *   engine/later.c      the calls of personalities v5, v6, v7
 */
#include "engine/internal.h"
#include "engine/sysclass.c"
#include "engine/abi.c"
#include "engine/syslet.c"
#include "engine/native.c"
#include "engine/plan.c"
#include "engine/run.c"
#include "engine/driver.c"
#include "engine/ctx.c"
#include "engine/exec.c"
#include "engine/fastpath.c"
#include "engine/wait.c"
#include "engine/later.c"

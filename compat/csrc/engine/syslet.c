/* The syslet table, a syslet's end (finish) and publishing finished
 * syslets into the completion ring.
 * Part of engine.c (one translation unit: see there). */

/* ---- syslet table ------------------------------------------------------ */

static struct syslet *syslet_new(struct sl_ctx *c)
{
    uint32_t id;
    if (c->nfree) {
        id = c->free_ids[--c->nfree];
    } else {
        if (c->tab_used == c->tab_cap) {
            uint32_t cap = c->tab_cap ? c->tab_cap * 2 : 64;
            if (cap > (1u << 24))
                return NULL;
            struct syslet **t = realloc(c->tab, cap * sizeof *t);
            uint32_t *f = realloc(c->free_ids, cap * sizeof *f);
            if (!t || !f) {
                if (t) c->tab = t;
                if (f) c->free_ids = f;
                return NULL;
            }
            c->tab = t;
            c->free_ids = f;
            for (uint32_t i = c->tab_cap; i < cap; i++)
                c->tab[i] = NULL;
            c->tab_cap = cap;
        }
        id = c->tab_used++;
    }
    struct syslet *s = c->tab[id];
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            c->free_ids[c->nfree++] = id;
            return NULL;
        }
        c->tab[id] = s;
        s->slot = id;
    }
    uint32_t gen = s->gen + 1;
    s->gen = gen & 0xffff;
    s->cur = s->final = s->final_flags = s->natoms = 0;
    s->async = s->in_caller = s->force_async = s->err_first = s->queued = 0;
    s->nseg = s->nreaped = 0;
    s->state = ST_READY;
    s->qnext = NULL;
    s->epoch = __atomic_load_n(&c->cancel, __ATOMIC_RELAXED);
    s->fdk_round = __atomic_add_fetch(&c->fdk_rounds, 1, __ATOMIC_RELAXED);
    if (!s->fdk_round)
        s->fdk_round = __atomic_add_fetch(&c->fdk_rounds, 1, __ATOMIC_RELAXED);
    s->resubmits = 0;
    s->have_pre = 0;
    s->sync_all = s->handoff = 0;
    s->abi = SL_ABI_V1;
    s->head = s->cdata = 0;
    return s;
}

static void syslet_free(struct sl_ctx *c, struct syslet *s)
{
    s->state = ST_FREE;
    c->free_ids[c->nfree++] = s->slot;
}

static inline uint64_t make_ud(const struct syslet *s, unsigned member)
{
    return ((uint64_t)s->gen << 40) | ((uint64_t)s->slot << 8) | member;
}

/* ---- ring publishing ---------------------------------------------------- */

static void kick_waiters(struct sl_ctx *c);
static void event_fd_signal(struct sl_ctx *c);

/* The 2007 convention of v7's results: a 32-bit int, sign-extended. */
static inline int64_t sext32(int64_t r)
{
    return (int64_t)(int32_t)r;
}

/* v1: the registered ring's next slot (c->prod).  1 published (or lost
 * with the ring memory: counted in faults), 0 the slot is taken. */
static int publish_v1(struct sl_ctx *c, const struct pubent *e)
{
    if (!c->registered)
        return 0;
    int swapped = 0;
    if (g_cas_release(c->ring_addr + 8 * c->prod, 0, e->val, &swapped))
        c->cnt.faults++;            /* ring memory vanished: entry lost */
    else if (!swapped)
        return 0;
    else
        c->cnt.published++;
    c->prod = (c->prod + 1) % c->nslots;
    return 1;
}

/* v5, v6: the ring of the async_head_user at e->head, read now; the
 * producer index is the head's kernel_ring_idx (taken modulo the slots),
 * stored back wrapped after the slot is filled. */
static int publish_head(struct sl_ctx *c, const struct pubent *e)
{
    uint64_t h[4];  /* kernel_ring_idx, user_ring_idx, completion_ring, ring_size_bytes */
    int swapped = 0;
    if (g_copy_in(h, e->head, sizeof h) || !h[2] || !h[3] || h[3] % 8) {
        c->cnt.faults++;            /* the head vanished or was unset: entry lost */
        return 1;
    }
    uint64_t n = h[3] / 8, idx = h[0] % n;
    if (g_cas_release(h[2] + 8 * idx, 0, e->val, &swapped)) {
        c->cnt.faults++;
        return 1;
    }
    if (!swapped)
        return 0;
    uint64_t next = (idx + 1) % n;
    if (g_copy_out(e->head, &next, 8))
        c->cnt.faults++;
    c->cnt.published++;
    return 1;
}

/* v7: {status, caller_data} at comp[kernel_head & (elements - 1)] of the
 * syslet_ring at e->head, then kernel_head + 1 (release).  Full while
 * kernel_head - user_tail == elements: we wait where the 2007 kernel
 * overwrote (docs/decisions.md). */
static int publish_v7(struct sl_ctx *c, const struct pubent *e)
{
    uint32_t hd[3];     /* kernel_head, user_tail, elements */
    if (g_copy_in(hd, e->head, sizeof hd) || !hd[2] || (hd[2] & (hd[2] - 1))) {
        c->cnt.faults++;
        return 1;
    }
    if ((uint32_t)(hd[0] - hd[1]) == hd[2])
        return 0;
    uint64_t comp[2] = {e->val, e->cdata};
    if (g_copy_out(e->head + 16 + 16 * (uint64_t)(hd[0] & (hd[2] - 1)), comp, sizeof comp)) {
        c->cnt.faults++;
        return 1;
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    uint32_t kh = hd[0] + 1;
    if (g_copy_out(e->head, &kh, 4))
        c->cnt.faults++;
    else
        c->cnt.published++;
    return 1;
}

/* One entry into its ring: 1 published (or lost with the ring memory,
 * counted in faults), 0 its slot is taken. */
static int publish_one(struct sl_ctx *c, const struct pubent *e)
{
    return e->abi == SL_ABI_V1 ? publish_v1(c, e) :
           e->abi == SL_ABI_V7 ? publish_v7(c, e) : publish_head(c, e);
}

static inline uint64_t pub_key(uint8_t abi, uint64_t head)
{
    return abi == SL_ABI_V1 ? 0 : head;
}

/* Publishes the front of ring r's queue while slots are free; an entry
 * whose slot is taken holds back the later ones of its ring only.
 * Returns how many went out. */
static unsigned publish_ring(struct sl_ctx *c, struct pubring *r)
{
    unsigned k = 0;
    while (r->n) {
        struct pubent *e = &r->e[r->head];
        if (!publish_one(c, e)) {
            if (!e->waited) {
                e->waited = 1;
                c->cnt.ring_full_waits++;
            }
            break;
        }
        r->head = (r->head + 1) % r->cap;
        r->n--;
        k++;
    }
    c->pubq_n -= k;
    return k;
}

/* A ring's queue emptied: its slot in c->pubr goes (swapped with the last). */
static void pubr_drop(struct sl_ctx *c, unsigned i)
{
    free(c->pubr[i].e);
    c->pubr[i] = c->pubr[--c->npubr];
}

static void published_some(struct sl_ctx *c)
{
    pthread_cond_broadcast(&c->cv);
    kick_waiters(c);
    event_fd_signal(c);         /* event loops watching sl_event_fd */
}

/* Publishes what waits, in order per ring.  A pass costs one look at the
 * front of each ring's queue: a backlog held back by a full ring costs
 * nothing per try, whatever else is published meanwhile. */
static void try_publish(struct sl_ctx *c)
{
    unsigned k = 0;
    for (unsigned i = 0; i < c->npubr;) {
        k += publish_ring(c, &c->pubr[i]);
        if (c->pubr[i].n == 0)
            pubr_drop(c, i);
        else
            i++;
    }
    if (k)
        published_some(c);
}

/* The index in c->pubr of ring key's queue; c->npubr when nothing of it waits. */
static unsigned pubr_find(const struct sl_ctx *c, uint64_t key)
{
    unsigned i = 0;
    while (i < c->npubr && c->pubr[i].key != key)
        i++;
    return i;
}

/* Are entries of ring key waiting? */
static int pub_waiting(const struct sl_ctx *c, uint64_t key)
{
    return pubr_find(c, key) < c->npubr;
}

static void enqueue_publish(struct sl_ctx *c, uint8_t abi, uint64_t val, uint64_t head,
                            uint64_t cdata)
{
    struct pubent ent = {val, head, cdata, abi, 0};
    uint64_t key = pub_key(abi, head);
    unsigned i = pubr_find(c, key);
    int fresh = i == c->npubr;
    if (fresh) {
        /* Nothing of this ring waits: straight into it when a slot is free. */
        if (publish_one(c, &ent)) {
            published_some(c);
            return;
        }
        ent.waited = 1;
        c->cnt.ring_full_waits++;
        if (c->npubr == c->pubr_cap) {
            unsigned cap = c->pubr_cap ? 2 * c->pubr_cap : 4;
            struct pubring *q = realloc(c->pubr, cap * sizeof *q);
            if (!q)
                return;     /* out of memory: cannot happen in practice */
            c->pubr = q;
            c->pubr_cap = cap;
        }
        struct pubring *r = &c->pubr[c->npubr];
        memset(r, 0, sizeof *r);
        r->key = key;
        if (!(r->e = malloc(16 * sizeof *r->e)))
            return;
        r->cap = 16;
        c->npubr++;
    }
    struct pubring *r = &c->pubr[i];
    if (r->n == r->cap) {
        struct pubent *q = malloc(2 * r->cap * sizeof *q);
        if (!q)
            return;
        for (unsigned j = 0; j < r->n; j++)
            q[j] = r->e[(r->head + j) % r->cap];
        free(r->e);
        r->e = q;
        r->cap *= 2;
        r->head = 0;
    }
    r->e[(r->head + r->n) % r->cap] = ent;
    r->n++;
    c->pubq_n++;
    /* Its ring's front may have a slot now (the program consumed): keep
     * the order, the front goes first.  (A queue made just now holds only
     * this entry, whose slot was found taken above.) */
    if (!fresh && publish_ring(c, r)) {
        if (r->n == 0)
            pubr_drop(c, i);
        published_some(c);
    }
}

/* The syslet has ended with s->final as its final atom. */
static void finish(struct sl_ctx *c, struct syslet *s)
{
    s->state = ST_DONE;
    if (s->in_caller)
        return;         /* the caller collects it */
    if (s->abi == SL_ABI_V7) {
        /* indirect's own atom (s->head): its result is the entry's status */
        struct v7call *v = (struct v7call *)(uintptr_t)s->head;
        enqueue_publish(c, SL_ABI_V7, (uint64_t)sext32(s->final ? v->ret : -EFAULT),
                        v->ring, v->cdata);
        free(v);
    } else if (s->final && !(s->final_flags & F_NO_COMPLETE)) {
        enqueue_publish(c, s->abi, s->final, s->head, 0);
    }
    c->inflight--;
    c->inflight_v1 -= s->abi == SL_ABI_V1;
    syslet_free(c, s);
    pthread_cond_broadcast(&c->cv);
}

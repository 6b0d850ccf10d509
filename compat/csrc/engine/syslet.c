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
    s->resubmits = 0;
    s->have_pre = 0;
    s->sync_all = s->handoff = 0;
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

static void try_publish(struct sl_ctx *c)
{
    uint64_t published = c->cnt.published;
    while (c->pubq_n && c->registered) {
        uint64_t slot_addr = c->ring_addr + 8 * c->prod;
        uint64_t atom = c->pubq[c->pubq_head];
        int swapped = 0;
        if (g_cas_release(slot_addr, 0, atom, &swapped)) {
            c->cnt.faults++;        /* ring memory vanished: entry lost */
            swapped = 1;
        } else if (!swapped) {
            if (!c->pub_blocked) {
                c->pub_blocked = 1;
                c->cnt.ring_full_waits++;
            }
            return;
        } else {
            c->cnt.published++;
        }
        c->pub_blocked = 0;
        c->prod = (c->prod + 1) % c->nslots;
        c->pubq_head = (c->pubq_head + 1) % c->pubq_cap;
        c->pubq_n--;
        pthread_cond_broadcast(&c->cv);
    }
    if (c->cnt.published != published)
        kick_waiters(c);
}

static void enqueue_publish(struct sl_ctx *c, uint64_t atom)
{
    if (c->pubq_n == c->pubq_cap) {
        unsigned cap = c->pubq_cap ? c->pubq_cap * 2 : 64;
        uint64_t *q = malloc(cap * sizeof *q);
        if (!q)
            return;     /* out of memory: cannot happen in practice */
        for (unsigned i = 0; i < c->pubq_n; i++)
            q[i] = c->pubq[(c->pubq_head + i) % c->pubq_cap];
        free(c->pubq);
        c->pubq = q;
        c->pubq_cap = cap;
        c->pubq_head = 0;
    }
    c->pubq[(c->pubq_head + c->pubq_n) % c->pubq_cap] = atom;
    c->pubq_n++;
    try_publish(c);
}

/* The syslet has ended with s->final as its final atom. */
static void finish(struct sl_ctx *c, struct syslet *s)
{
    s->state = ST_DONE;
    if (s->in_caller)
        return;         /* the caller collects it */
    if (s->final && !(s->final_flags & F_NO_COMPLETE))
        enqueue_publish(c, s->final);
    c->inflight--;
    syslet_free(c, s);
    pthread_cond_broadcast(&c->cv);
}

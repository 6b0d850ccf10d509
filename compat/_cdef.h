/* The C surface of the syslet engine (compat/csrc/engine.h) for cffi. */
struct sl_counters {
    uint64_t syslets_sync; uint64_t syslets_async; uint64_t atoms_uring; uint64_t atoms_inline;
    uint64_t atoms_pool; uint64_t atoms_nowait; uint64_t segments; uint64_t enters;
    uint64_t overstops; uint64_t ring_full_waits; uint64_t published; uint64_t pool_batches;
    uint64_t faults;
};
struct sl_ctx;
struct sl_ctx *sl_ctx_new(int backend, unsigned sq_entries, int *err);
int sl_ctx_free(struct sl_ctx *c, int cancel);
int sl_ctx_backend(struct sl_ctx *c);
int sl_register(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, uint64_t max_threads);
int sl_unregister(struct sl_ctx *c, uint64_t ring, uint64_t ring_bytes, int64_t timeout_ns);
int64_t sl_exec(struct sl_ctx *c, uint64_t atom);
int sl_exec_batch(struct sl_ctx *c, const uint64_t *atoms, unsigned n, int64_t *results);
int sl_wait(struct sl_ctx *c, uint64_t min_events, int64_t timeout_ns);
int64_t sl_ring_count(struct sl_ctx *c);
unsigned sl_inflight(struct sl_ctx *c);
void sl_get_counters(struct sl_ctx *c, struct sl_counters *out);
void sl_set_trace(struct sl_ctx *c, int on);
void sl_set_budget(struct sl_ctx *c, uint64_t max_atoms);
void sl_cancel_all(struct sl_ctx *c);
unsigned sl_threads(struct sl_ctx *c);
int sl_peek(uint64_t addr, void *out, uint64_t n);
int sl_poke(uint64_t addr, const void *in, uint64_t n);
int64_t sl_umem_add(uint64_t addr, uint64_t inc, int *err);
int sl_guard_install(void);
const char *sl_version(void);

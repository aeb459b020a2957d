// The emulated CUDA device's runtime: fibers, the block scheduler, collectives, and the
// checks a GPU's tools would make (see cuda_emu.h for the model). One launch at a time per
// process (a mutex): `__shared__` statics are process-wide.
#include "cuda_emu.h"
#include "ptx_emu.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <deque>
#include <mutex>
#include <vector>

extern "C" char __start_glip_emu_shared[] __attribute__((weak));
extern "C" char __stop_glip_emu_shared[] __attribute__((weak));

// ---- the launch description shared with Rust (src/backend/cuda/emu.rs) -----------------------
extern "C" {
struct GlipEmuBuf {
    const void* ptr;
    size_t bytes;
    int32_t arg;
    int32_t _pad;
};
struct GlipEmuLaunch {
    const char* kernel;
    int (*tramp)(void**, int);  // (nullptr, 0) -> arity; (args, n) -> runs the kernel
    void** args;
    int32_t nargs;
    int32_t _pad0;
    uint32_t grid[3];
    uint32_t block[3];
    uint64_t dyn_smem;
    int32_t policy;     // 0 forward, 1 reverse, 2 random, 3 warps ahead, 4 warps ahead (reverse)
    int32_t smem_fill;  // byte every block's shared memory starts with
    uint64_t seed;
    const GlipEmuBuf* bufs;
    int32_t nbufs;
    int32_t _pad;
};
}

namespace glip_emu {
ThreadCtx* g_thread = nullptr;
uint3 g_block_idx;
dim3 g_block_dim, g_grid_dim;

namespace {
constexpr size_t kStack = 256 * 1024;
constexpr int kMaxPending = 4;

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

struct AsyncCopy {
    void* dst;
    const void* src;
    int bytes;
    long group;
};

struct Fiber {
    ThreadCtx ctx;
    void* sp;
    State state;
    const char* bar_file;
    int bar_line, bar_kind, bar_pred, bar_result;
    const char* w_op;
    const char* w_file;
    int w_line;
    char* stack_lo;  // lowest usable byte; the guard page is just below
    std::vector<AsyncCopy> async;
    long committed;
};

struct Pending {
    bool used;
    unsigned mask, arrived;
    const char* op;
    const char* file;
    int line;
    void* slots[32];
    CollectiveFn fn;
};

struct Launch {
    const GlipEmuLaunch* L;
    int nthreads, nwarps, live, bar_arrived;
    std::vector<Fiber> fibers;
    std::vector<Pending> pending;  // nwarps * kMaxPending
    std::deque<int> fifo;
    std::vector<int> pool;                // random policy
    std::vector<std::deque<int>> by_warp;  // warps-ahead policies
    uint64_t rng;
    char* dyn;        // dynamic shared memory (ends on a guard page)
    char* dyn_base;
    size_t dyn_map;   // bytes mapped for it
    Fiber* cur;
    void* sched_sp;
    sigjmp_buf jmp;
    char err[2048];
};

Launch* g_launch = nullptr;
int g_class = 0;  // error class of the failure being reported (GlipEmuError in emu.rs)
pthread_t g_owner;
std::mutex g_mutex;
size_t g_page = 4096;
std::vector<char*> g_stacks;  // reused across launches (mapped with a guard page each)

uint64_t next_rand(uint64_t& s) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
}
}  // namespace
}  // namespace glip_emu

// ---- context switch: callee-saved registers + MXCSR/x87 control word ------------------------
#if defined(__x86_64__)
extern "C" void glip_emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl glip_emu_switch
    .hidden glip_emu_switch
    .type glip_emu_switch,@function
glip_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size glip_emu_switch,.-glip_emu_switch
)");
#else
#error "the emulated CUDA device's context switch is written for x86_64"
#endif

namespace glip_emu {
namespace {
[[noreturn]] void fiber_entry();

void init_stack(Fiber& f) {
    char* top = f.stack_lo + kStack;  // page aligned, hence 16-byte aligned
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    *--s = 0;                                            // fake return address of fiber_entry
    *--s = reinterpret_cast<uint64_t>(&fiber_entry);     // popped by `ret`
    for (int i = 0; i < 6; i++) *--s = 0;                // rbp rbx r12 r13 r14 r15
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    csr[1] = 0x037f;  // x87 default control word
    *--s = (uint64_t)csr[0] | ((uint64_t)csr[1] << 32);
    f.sp = s;
}

char* stack_for(size_t i) {
    while (g_stacks.size() <= i) {
        void* m = mmap(nullptr, kStack + g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return nullptr;
        mprotect(m, g_page, PROT_NONE);
        g_stacks.push_back(static_cast<char*>(m) + g_page);
    }
    return g_stacks[i];
}

Launch& L() { return *g_launch; }
bool reversed() { return L().L->policy == 1 || L().L->policy == 4; }

void enqueue(int i) {
    Launch& l = L();
    l.fibers[i].state = RUNNABLE;
    switch (l.L->policy) {
        case 2: l.pool.push_back(i); break;
        case 3:
        case 4: l.by_warp[i / 32].push_back(i); break;
        default: l.fifo.push_back(i); break;
    }
}

Fiber* pick() {
    Launch& l = L();
    int i = -1;
    switch (l.L->policy) {
        case 2:
            if (!l.pool.empty()) {
                size_t k = next_rand(l.rng) % l.pool.size();
                i = l.pool[k];
                l.pool[k] = l.pool.back();
                l.pool.pop_back();
            }
            break;
        case 3:
            for (auto& q : l.by_warp)
                if (!q.empty()) { i = q.front(); q.pop_front(); break; }
            break;
        case 4:
            for (size_t w = l.by_warp.size(); w-- > 0;)
                if (!l.by_warp[w].empty()) { i = l.by_warp[w].front(); l.by_warp[w].pop_front(); break; }
            break;
        default:
            if (!l.fifo.empty()) { i = l.fifo.front(); l.fifo.pop_front(); }
            break;
    }
    return i < 0 ? nullptr : &l.fibers[i];
}

void yield() {
    Launch& l = L();
    glip_emu_switch(&l.cur->sp, l.sched_sp);
}

void vfail(const char* fmt, va_list ap) {
    Launch& l = L();
    int n = 0;
    const uint3 b = g_block_idx;
    if (l.cur) {
        const ThreadCtx& t = l.cur->ctx;
        n = snprintf(l.err, sizeof l.err, "%s: block (%u,%u,%u) thread (%u,%u,%u) [warp %d lane %d]: ", l.L->kernel, b.x, b.y, b.z,
                     t.idx.x, t.idx.y, t.idx.z, t.warp, t.lane);
    } else {
        n = snprintf(l.err, sizeof l.err, "%s: block (%u,%u,%u): ", l.L->kernel, b.x, b.y, b.z);
    }
    if (n < 0) n = 0;
    if ((size_t)n < sizeof l.err) vsnprintf(l.err + n, sizeof l.err - n, fmt, ap);
}

void set_err(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void set_err(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
    va_end(ap);
}

void maybe_release_barrier() {
    Launch& l = L();
    if (l.bar_arrived == 0 || l.bar_arrived != l.live) return;
    const Fiber* first = nullptr;
    int count = 0, all = 1, any = 0;
    for (auto& f : l.fibers) {
        if (f.state != AT_BARRIER) continue;
        if (!first) first = &f;
        else if (f.bar_line != first->bar_line || f.bar_kind != first->bar_kind || strcmp(f.bar_file, first->bar_file) != 0)
            fail_class(ERR_BARRIER, "barrier divergence: thread %d waits at %s:%d while thread %d waits at %s:%d", first->ctx.linear, first->bar_file,
                 first->bar_line, f.ctx.linear, f.bar_file, f.bar_line);
        count += f.bar_pred;
        all &= f.bar_pred;
        any |= f.bar_pred;
    }
    const int result = first->bar_kind == 1 ? count : first->bar_kind == 2 ? all : first->bar_kind == 3 ? any : 0;
    l.bar_arrived = 0;
    const int n = l.nthreads;
    for (int k = 0; k < n; k++) {
        const int i = reversed() ? n - 1 - k : k;
        if (l.fibers[i].state == AT_BARRIER) {
            l.fibers[i].bar_result = result;
            enqueue(i);
        }
    }
}

unsigned lanes_of(int warp) {
    const int n = L().nthreads - warp * 32;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

unsigned exited_lanes(int warp) {
    unsigned m = 0;
    Launch& l = L();
    for (int i = warp * 32; i < l.nthreads && i < warp * 32 + 32; i++)
        if (l.fibers[i].state == DONE) m |= 1u << (i - warp * 32);
    return m;
}

void complete_async(Fiber& f, long below_group) {
    size_t keep = 0;
    for (size_t k = 0; k < f.async.size(); k++) {
        AsyncCopy& c = f.async[k];
        if (c.group < below_group) memcpy(c.dst, c.src, (size_t)c.bytes);
        else f.async[keep++] = c;
    }
    f.async.resize(keep);
}

void thread_exit(Fiber& f) {
    Launch& l = L();
    complete_async(f, 1L << 62);
    f.state = DONE;
    l.live--;
    const unsigned bit = 1u << f.ctx.lane;
    for (int k = 0; k < kMaxPending; k++) {
        Pending& p = l.pending[f.ctx.warp * kMaxPending + k];
        if (p.used && (p.mask & bit) && !(p.arrived & bit))
            fail("exits while lanes 0x%08x of its warp wait in %s at %s:%d with mask 0x%08x (a lane of the mask never arrives)", p.arrived,
                 p.op, p.file, p.line, p.mask);
    }
    maybe_release_barrier();
}

[[noreturn]] void fiber_entry() {
    Launch& l = L();
    l.L->tramp(l.L->args, l.L->nargs);
    thread_exit(*l.cur);
    glip_emu_switch(&l.cur->sp, l.sched_sp);
    abort();  // a finished fiber is never resumed
}

void describe_deadlock() {
    Launch& l = L();
    char buf[1024];
    int n = 0;
    for (auto& f : l.fibers) {
        if (f.state == AT_WARP && n < 700) {
            n += snprintf(buf + n, sizeof buf - n, "thread %d waits in %s at %s:%d; ", f.ctx.linear, f.w_op, f.w_file, f.w_line);
            break;
        }
    }
    for (auto& f : l.fibers) {
        if (f.state == AT_BARRIER && n < 900) {
            n += snprintf(buf + n, sizeof buf - n, "thread %d waits at __syncthreads %s:%d; ", f.ctx.linear, f.bar_file, f.bar_line);
            break;
        }
    }
    fail_class(ERR_BARRIER, "deadlock: %d live threads, none can run (%s%d at the barrier): a __syncthreads or warp collective not reached by every live "
         "thread",
         l.live, buf, l.bar_arrived);
}

void run_block(uint32_t linear) {
    Launch& l = L();
    const GlipEmuLaunch& D = *l.L;
    g_block_idx.x = linear % D.grid[0];
    g_block_idx.y = (linear / D.grid[0]) % D.grid[1];
    g_block_idx.z = linear / (D.grid[0] * D.grid[1]);
    if (__start_glip_emu_shared && __stop_glip_emu_shared)
        memset(__start_glip_emu_shared, D.smem_fill, (size_t)(__stop_glip_emu_shared - __start_glip_emu_shared));
    if (D.dyn_smem) memset(l.dyn, D.smem_fill, D.dyn_smem);
    l.live = l.nthreads;
    l.bar_arrived = 0;
    for (auto& p : l.pending) p.used = false;
    l.fifo.clear();
    l.pool.clear();
    for (auto& q : l.by_warp) q.clear();
    for (int i = 0; i < l.nthreads; i++) {
        Fiber& f = l.fibers[i];
        f.async.clear();
        f.committed = 0;
        init_stack(f);
    }
    for (int k = 0; k < l.nthreads; k++) enqueue(reversed() ? l.nthreads - 1 - k : k);
    while (Fiber* f = pick()) {
        l.cur = f;
        g_thread = &f->ctx;
        glip_emu_switch(&l.sched_sp, f->sp);
        l.cur = nullptr;
        g_thread = nullptr;
    }
    if (l.live > 0) describe_deadlock();
}

// ---- SIGSEGV: an invalid access inside a launch becomes an error naming what it hit ---------
struct sigaction g_old_segv, g_old_bus;

void describe_fault(void* addr, bool write) {
    Launch& l = L();
    const uintptr_t a = (uintptr_t)addr;
    char what[512];
    snprintf(what, sizeof what, "address %p is in no buffer of this launch (a stray or null pointer, or a freed buffer)", addr);
    for (int i = 0; i < l.L->nbufs; i++) {
        const GlipEmuBuf& b = l.L->bufs[i];
        const uintptr_t s = (uintptr_t)b.ptr, e = s + b.bytes;
        if (a >= e && a < e + g_page) {
            snprintf(what, sizeof what, "%zu bytes past the end of argument %d (a buffer of %zu bytes)", (size_t)(a - e), b.arg, b.bytes);
            break;
        }
        const uintptr_t lo = (s & ~(uintptr_t)(g_page - 1)) - g_page;
        if (a >= lo && a < s) {
            snprintf(what, sizeof what, "%zu bytes before the start of argument %d (a buffer of %zu bytes)", (size_t)(s - a), b.arg, b.bytes);
            break;
        }
    }
    if (l.dyn && a >= (uintptr_t)l.dyn + l.L->dyn_smem && a < (uintptr_t)l.dyn + l.L->dyn_smem + g_page)
        snprintf(what, sizeof what, "%zu bytes past the end of dynamic shared memory (%zu bytes)",
                 (size_t)(a - (uintptr_t)l.dyn - l.L->dyn_smem), (size_t)l.L->dyn_smem);
    if (l.cur && a >= (uintptr_t)l.cur->stack_lo - g_page && a < (uintptr_t)l.cur->stack_lo)
        snprintf(what, sizeof what, "stack overflow (the thread's emulated stack is %zu KiB)", kStack / 1024);
    set_err("out-of-bounds global %s: %s", write ? "write" : "read", what);
}

void on_fault(int sig, siginfo_t* si, void* uc) {
    if (g_launch && pthread_equal(pthread_self(), g_owner)) {
        bool write = false;
#if defined(__x86_64__)
        write = (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
        g_class = ERR_BOUNDS;
        describe_fault(si->si_addr, write);
        siglongjmp(g_launch->jmp, 2);
    }
    struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
    if (old.sa_flags & SA_SIGINFO) {
        old.sa_sigaction(sig, si, uc);
    } else if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL);  // returning re-executes the access: the default action follows
    } else {
        old.sa_handler(sig);
    }
}

void install_handlers() {
    static bool done = false;
    if (done) return;
    done = true;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
}

// A fault on a fiber stack's guard page needs another stack for the handler.
void ensure_altstack() {
    stack_t cur;
    if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
    static thread_local char* alt = nullptr;
    if (!alt) alt = static_cast<char*>(malloc(64 * 1024));
    if (!alt) return;
    stack_t ss;
    ss.ss_sp = alt;
    ss.ss_size = 64 * 1024;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
}
}  // namespace

// ---- collectives ------------------------------------------------------------------------
void fail_class(int cls, const char* fmt, ...) {
    g_class = cls;
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
    va_end(ap);
    siglongjmp(L().jmp, 1);
}

void fail(const char* fmt, ...) {
    if (!g_class) g_class = ERR_WARP;
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
    va_end(ap);
    siglongjmp(L().jmp, 1);
}

int block_barrier(int kind, int pred, const char* file, int line) {
    Launch& l = L();
    Fiber& f = *l.cur;
    f.state = AT_BARRIER;
    f.bar_file = file;
    f.bar_line = line;
    f.bar_kind = kind;
    f.bar_pred = pred;
    l.bar_arrived++;
    maybe_release_barrier();
    yield();
    return f.bar_result;
}

void warp_collective(unsigned mask, const char* op, const char* file, int line, void* slot, CollectiveFn complete) {
    Launch& l = L();
    Fiber& f = *l.cur;
    const int w = f.ctx.warp, lane = f.ctx.lane;
    const unsigned bit = 1u << lane;
    if (!(mask & bit)) fail("%s at %s:%d: the calling lane is not in its mask 0x%08x", op, file, line, mask);
    const unsigned exist = lanes_of(w);
    if (mask & ~exist) fail("%s at %s:%d: mask 0x%08x names lanes this block does not have (warp %d has 0x%08x)", op, file, line, mask, w, exist);
    const unsigned gone = exited_lanes(w) & mask;
    if (gone) fail("%s at %s:%d: lanes 0x%08x of mask 0x%08x have exited (missing lanes)", op, file, line, gone, mask);
    Pending* p = nullptr;
    Pending* freep = nullptr;
    for (int k = 0; k < kMaxPending; k++) {
        Pending& q = l.pending[w * kMaxPending + k];
        if (!q.used) {
            if (!freep) freep = &q;
            continue;
        }
        if (q.mask & mask) {
            if (q.mask != mask || strcmp(q.op, op) != 0)
                fail("%s at %s:%d with mask 0x%08x while lanes 0x%08x wait in %s at %s:%d with mask 0x%08x", op, file, line, mask, q.arrived, q.op,
                     q.file, q.line, q.mask);
            p = &q;
            break;
        }
    }
    if (!p) {
        if (!freep) fail("%s: more than %d concurrent warp collectives in one warp", op, kMaxPending);
        p = freep;
        p->used = true;
        p->mask = mask;
        p->arrived = 0;
        p->op = op;
        p->file = file;
        p->line = line;
        p->fn = complete;
    }
    p->slots[lane] = slot;
    p->arrived |= bit;
    f.state = AT_WARP;
    f.w_op = op;
    f.w_file = file;
    f.w_line = line;
    if (p->arrived == mask) {
        p->fn(p->slots, mask);
        p->used = false;
        for (int k = 0; k < 32; k++) {
            const int ln = reversed() ? 31 - k : k;
            if (mask & (1u << ln)) enqueue(w * 32 + ln);
        }
    }
    yield();
}

void shfl_complete(void* const* slots, unsigned mask) {
    const ShflSlot* first = nullptr;
    for (int lane = 0; lane < 32; lane++) {
        if (!(mask & (1u << lane))) continue;
        ShflSlot* s = static_cast<ShflSlot*>(slots[lane]);
        if (!first) first = s;
        else if (s->c != first->c || s->mode != first->mode)
            fail("shuffle: lanes %d and %d use different widths", first->lane, lane);
        const int seg = (s->c >> 8) & 0x1f, clamp = s->c & 0x1f;
        const int min_lane = lane & seg, max_lane = (lane & seg) | (clamp & ~seg);
        int j = lane;
        bool ok = false;
        switch (s->mode) {
            case 1: j = lane - s->b; ok = j >= max_lane; break;
            case 2: j = lane + s->b; ok = j <= max_lane; break;
            case 3: j = lane ^ s->b; ok = j <= max_lane; break;
            default: j = min_lane | (s->b & ~seg & 0x1f); ok = j <= max_lane; break;
        }
        if (!ok) j = lane;
        if (j < 0 || j > 31 || !(mask & (1u << j))) fail("shuffle: lane %d reads lane %d, which is not in the mask 0x%08x", lane, j, mask);
        s->result = static_cast<ShflSlot*>(slots[j])->value;
    }
}

void ballot_complete(void* const* slots, unsigned mask) {
    unsigned bits = 0;
    for (int l = 0; l < 32; l++)
        if ((mask & (1u << l)) && static_cast<VoteSlot*>(slots[l])->pred) bits |= 1u << l;
    for (int l = 0; l < 32; l++)
        if (mask & (1u << l)) static_cast<VoteSlot*>(slots[l])->result = bits;
}

unsigned active_mask() { return lanes_of(g_thread->warp) & ~exited_lanes(g_thread->warp); }

void* dynamic_shared() {
    Launch& l = L();
    if (!l.L->dyn_smem) fail_class(ERR_LAUNCH, "extern __shared__ memory used but the launch requested 0 bytes");
    return l.dyn;
}

// ---- tensor-core and async-copy twins (kernels/tc.cuh) -------------------------------------
namespace {
struct MmaSlot {
    float* d;
    const uint32_t* a;
    const uint32_t* b;
    const float* c;
};
inline float lo_half(uint32_t r) { return __half2float(__ushort_as_half((unsigned short)(r & 0xffffu))); }
inline float hi_half(uint32_t r) { return __half2float(__ushort_as_half((unsigned short)(r >> 16))); }
void mma_complete(void* const* slots, unsigned mask) {
    if (mask != 0xffffffffu) fail("mma.sync needs the full warp");
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaSlot* s = static_cast<const MmaSlot*>(slots[l]);
        const int g = l >> 2, t = l & 3;
        for (int h = 0; h < 2; h++) {
            const int col = 2 * t + h;
            A[g][col] = h ? hi_half(s->a[0]) : lo_half(s->a[0]);
            A[g + 8][col] = h ? hi_half(s->a[1]) : lo_half(s->a[1]);
            A[g][col + 8] = h ? hi_half(s->a[2]) : lo_half(s->a[2]);
            A[g + 8][col + 8] = h ? hi_half(s->a[3]) : lo_half(s->a[3]);
            B[col][g] = h ? hi_half(s->b[0]) : lo_half(s->b[0]);
            B[col + 8][g] = h ? hi_half(s->b[1]) : lo_half(s->b[1]);
        }
        C[g][2 * t] = s->c[0];
        C[g][2 * t + 1] = s->c[1];
        C[g + 8][2 * t] = s->c[2];
        C[g + 8][2 * t + 1] = s->c[3];
    }
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            float acc = C[i][j];
            for (int k = 0; k < 16; k++) acc += A[i][k] * B[k][j];
            D[i][j] = acc;
        }
    for (int l = 0; l < 32; l++) {
        const MmaSlot* s = static_cast<const MmaSlot*>(slots[l]);
        const int g = l >> 2, t = l & 3;
        s->d[0] = D[g][2 * t];
        s->d[1] = D[g][2 * t + 1];
        s->d[2] = D[g + 8][2 * t];
        s->d[3] = D[g + 8][2 * t + 1];
    }
}

struct LdSlot {
    uint32_t* r;
    const void* row;
    int count;
    bool trans;
};
void ldmatrix_complete(void* const* slots, unsigned mask) {
    if (mask != 0xffffffffu) fail("ldmatrix needs the full warp");
    const LdSlot* s0 = static_cast<const LdSlot*>(slots[0]);
    for (int l = 1; l < 32; l++) {
        const LdSlot* s = static_cast<const LdSlot*>(slots[l]);
        if (s->count != s0->count || s->trans != s0->trans) fail("ldmatrix: lanes 0 and %d use different shapes", l);
    }
    for (int j = 0; j < s0->count; j++) {
        uint16_t M[8][8];
        for (int r = 0; r < 8; r++) {
            const void* row = static_cast<const LdSlot*>(slots[j * 8 + r])->row;
            if ((uintptr_t)row % 16 != 0) fail_class(ERR_ALIGN, "ldmatrix: row address %p of lane %d is not 16-byte aligned", row, j * 8 + r);
            memcpy(M[r], row, 16);
        }
        for (int l = 0; l < 32; l++) {
            const int g = l >> 2, t = l & 3;
            const uint16_t a = s0->trans ? M[2 * t][g] : M[g][2 * t];
            const uint16_t b = s0->trans ? M[2 * t + 1][g] : M[g][2 * t + 1];
            static_cast<const LdSlot*>(slots[l])->r[j] = (uint32_t)a | ((uint32_t)b << 16);
        }
    }
}
}  // namespace

void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], const char* file, int line) {
    MmaSlot s{d, a, b, c};
    float out[4];
    s.d = out;  // d may alias c
    warp_collective(0xffffffffu, "mma.sync.m16n8k16", file, line, &s, mma_complete);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

void ldmatrix(uint32_t* r, int count, bool trans, const void* row, const char* file, int line) {
    LdSlot s{r, row, count, trans};
    warp_collective(0xffffffffu, trans ? "ldmatrix.trans" : "ldmatrix", file, line, &s, ldmatrix_complete);
}

void cp_async(void* dst, const void* src, int bytes, const char* file, int line) {
    if ((uintptr_t)dst % bytes || (uintptr_t)src % bytes)
        fail_class(ERR_ALIGN, "cp.async at %s:%d: addresses %p <- %p are not %d-byte aligned", file, line, dst, src, bytes);
    Fiber& f = *L().cur;
    // The copy happens at the wait that covers it: a read before the wait sees stale shared
    // memory, which the poison check then reports.
    f.async.push_back(AsyncCopy{dst, src, bytes, f.committed});
}
void cp_async_commit() { L().cur->committed++; }
void cp_async_wait(int n) {
    Fiber& f = *L().cur;
    complete_async(f, f.committed - n);
}
}  // namespace glip_emu

// ---- -fsanitize=bounds handlers: an index outside an array of known size -------------------
namespace {
struct UbsanLoc {
    const char* file;
    uint32_t line, column;
};
struct UbsanType {
    uint16_t kind, info;
    char name[1];
};
struct UbsanOob {
    UbsanLoc loc;
    const UbsanType* array;
    const UbsanType* index;
};
[[noreturn]] void oob(UbsanOob* d, uintptr_t index) {
    const bool is_signed = d->index && (d->index->info & 1);
    const long long v = is_signed ? (long long)(intptr_t)index : (long long)index;
    if (glip_emu::g_launch && pthread_equal(pthread_self(), glip_emu::g_owner))
        glip_emu::fail_class(glip_emu::ERR_BOUNDS, "out-of-bounds index %lld into %s at %s:%u:%u (shared or local array)", v, d->array ? d->array->name : "an array",
                       d->loc.file, d->loc.line, d->loc.column);
    fprintf(stderr, "glip emulator: out-of-bounds index %lld at %s:%u\n", v, d->loc.file, d->loc.line);
    abort();
}
}  // namespace
extern "C" void __ubsan_handle_out_of_bounds(UbsanOob* d, uintptr_t index) { oob(d, index); }
extern "C" void __ubsan_handle_out_of_bounds_abort(UbsanOob* d, uintptr_t index) { oob(d, index); }

// ---- the C API for Rust ------------------------------------------------------------------------
extern "C" void* glip_emu_alloc(size_t bytes) {
    using namespace glip_emu;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t pages = bytes == 0 ? 1 : (bytes + g_page - 1) / g_page;
    const size_t total = (pages + 2) * g_page;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* base = static_cast<char*>(m);
    mprotect(base, g_page, PROT_NONE);
    char* end = base + (pages + 1) * g_page;
    mprotect(end, g_page, PROT_NONE);
    // The start is 16-byte aligned, as the vector loads, cp.async and ldmatrix of the
    // kernels need (cudaMalloc gives 256): a buffer whose size is not a multiple of 16 ends
    // up to 15 bytes before the guard page. Those bytes, and the ones before the start, are
    // a canary that glip_emu_canary_ok checks after every launch.
    char* p = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(end - bytes) & ~(uintptr_t)15);
    memset(base + g_page, 0xA5, (size_t)(p - (base + g_page)));
    memset(p + bytes, 0xA5, (size_t)(end - (p + bytes)));
    return p;
}

namespace {
// The end of a buffer's last data page (where its guard page starts).
inline char* glip_emu_data_end(const void* p, size_t bytes) {
    const uintptr_t e = reinterpret_cast<uintptr_t>(p) + bytes;
    return reinterpret_cast<char*>((e + 15) & ~(uintptr_t)15);
}
}  // namespace

extern "C" void glip_emu_free(void* p, size_t bytes) {
    using namespace glip_emu;
    const size_t pages = bytes == 0 ? 1 : (bytes + g_page - 1) / g_page;
    char* end = glip_emu_data_end(p, bytes);
    munmap(end - (pages + 1) * g_page, (pages + 2) * g_page);
}

// 1 while the canary bytes around the buffer (from its first data page to its start, and
// from its end to the guard page) are untouched.
extern "C" int glip_emu_canary_ok(const void* p, size_t bytes) {
    using namespace glip_emu;
    const size_t pages = bytes == 0 ? 1 : (bytes + g_page - 1) / g_page;
    const unsigned char* start = static_cast<const unsigned char*>(p);
    const unsigned char* end = reinterpret_cast<const unsigned char*>(glip_emu_data_end(p, bytes));
    for (const unsigned char* q = end - pages * g_page; q < start; q++)
        if (*q != 0xA5) return 0;
    for (const unsigned char* q = start + bytes; q < end; q++)
        if (*q != 0xA5) return 0;
    return 1;
}

extern "C" int glip_emu_launch(const GlipEmuLaunch* D, char* err, size_t errlen) {
    using namespace glip_emu;
    std::lock_guard<std::mutex> lock(g_mutex);
    const uint64_t nthreads = (uint64_t)D->block[0] * D->block[1] * D->block[2];
    const uint64_t nblocks = (uint64_t)D->grid[0] * D->grid[1] * D->grid[2];
    auto refuse = [&](const char* why) {
        snprintf(err, errlen, "%s: invalid launch: %s (grid %u,%u,%u block %u,%u,%u)", D->kernel, why, D->grid[0], D->grid[1], D->grid[2],
                 D->block[0], D->block[1], D->block[2]);
        return (int)ERR_LAUNCH;
    };
    if (nthreads == 0 || nthreads > 1024 || D->block[0] > 1024 || D->block[1] > 1024 || D->block[2] > 64)
        return refuse("block must have 1..1024 threads (x, y <= 1024, z <= 64)");
    if (nblocks == 0 || D->grid[0] > 0x7fffffffu || D->grid[1] > 65535 || D->grid[2] > 65535)
        return refuse("grid must be 1 .. 2^31-1 x 65535 x 65535 and non-empty");
    if (nblocks > 0xffffffffull) return refuse("more than 2^32 blocks");
    if (D->dyn_smem > 227 * 1024) return refuse("more than 227 KiB of dynamic shared memory");

    Launch l;
    l.L = D;
    l.nthreads = (int)nthreads;
    l.nwarps = (int)((nthreads + 31) / 32);
    l.fibers.resize(nthreads);
    l.pending.assign((size_t)l.nwarps * kMaxPending, Pending{});
    l.by_warp.resize(l.nwarps);
    l.rng = D->seed | 1;
    l.dyn = nullptr;
    l.dyn_map = 0;
    l.cur = nullptr;
    l.err[0] = 0;
    for (int i = 0; i < l.nthreads; i++) {
        Fiber& f = l.fibers[i];
        const int x = i % D->block[0], y = (i / D->block[0]) % D->block[1], z = i / (D->block[0] * D->block[1]);
        f.ctx.idx = uint3{(unsigned)x, (unsigned)y, (unsigned)z};
        f.ctx.linear = i;
        f.ctx.lane = i % 32;
        f.ctx.warp = i / 32;
        f.stack_lo = stack_for((size_t)i);
        if (!f.stack_lo) return refuse("cannot map fiber stacks");
    }
    if (D->dyn_smem) {
        const size_t pages = (D->dyn_smem + g_page - 1) / g_page;
        l.dyn_map = (pages + 1) * g_page;
        void* m = mmap(nullptr, l.dyn_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return refuse("cannot map dynamic shared memory");
        mprotect(static_cast<char*>(m) + pages * g_page, g_page, PROT_NONE);
        // Dynamic shared memory starts 16-byte aligned (as on the GPU) and ends near the guard.
        l.dyn_base = static_cast<char*>(m);
        l.dyn = static_cast<char*>(m) + ((pages * g_page - D->dyn_smem) & ~(size_t)15);
    }
    g_block_dim = dim3(D->block[0], D->block[1], D->block[2]);
    g_grid_dim = dim3(D->grid[0], D->grid[1], D->grid[2]);

    std::vector<uint32_t> order(nblocks);
    for (uint64_t i = 0; i < nblocks; i++) order[i] = (uint32_t)i;
    if (D->policy == 1 || D->policy == 4) {
        for (uint64_t i = 0; i < nblocks / 2; i++) std::swap(order[i], order[nblocks - 1 - i]);
    } else if (D->policy == 2) {
        for (uint64_t i = nblocks; i > 1; i--) std::swap(order[i - 1], order[next_rand(l.rng) % i]);
    }

    install_handlers();
    ensure_altstack();
    g_owner = pthread_self();
    g_launch = &l;
    g_class = 0;
    int rc = 0;
    if (sigsetjmp(l.jmp, 1) == 0) {
        for (uint64_t i = 0; i < nblocks; i++) run_block(order[i]);
    } else {
        rc = g_class ? g_class : ERR_WARP;
    }
    g_launch = nullptr;
    g_thread = nullptr;
    if (l.dyn_map) munmap(l.dyn_base, l.dyn_map);
    if (rc) snprintf(err, errlen, "%s", l.err);
    return rc;
}

// Which code of the release binary runs, for tools/text-order/order.txt (see run.sh).
//
// Loaded with LD_PRELOAD into the process whose /proc/self/exe is $PAGE_TRACE_EXE (run as
// `serve`), it makes the executable's code unreadable but for the last WINDOW pages entered:
// every entry into another page faults, the handler writes the address executed (its file
// offset, hex, one a line, each address once, in the order first seen) to $PAGE_TRACE_OUT
// and opens that page.
// A function whose address is written ran. Tracing costs a few microseconds per page change;
// the program runs as usual otherwise (Rust's runtime keeps a SIGSEGV handler it finds set).
// A function entered from a page still open is not seen: hence a window of two pages (one
// would never let an instruction that spans two pages run), and several runs (see run.sh).
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define WINDOW 2
#define TABLE (1u << 21)
static int out_fd = -1;
static unsigned long lo, hi, file_off;
static unsigned long seen[TABLE];
static unsigned long window[WINDOW];
static unsigned int next_slot;

static int insert(unsigned long v) {
    unsigned long h = (v * 0x9E3779B97F4A7C15ul) >> 43;
    for (;;) {
        h &= TABLE - 1;
        unsigned long cur = __atomic_load_n(&seen[h], __ATOMIC_RELAXED);
        if (cur == v) return 0;
        if (cur == 0) {
            unsigned long zero = 0;
            if (__atomic_compare_exchange_n(&seen[h], &zero, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return 1;
            if (zero == v) return 0;
        }
        h++;
    }
}

static void handler(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    unsigned long addr = (unsigned long)si->si_addr, a = addr & ~4095UL;
    if (a >= lo && a < hi) {
        unsigned long v = addr - lo + file_off;
        if (insert(v + 1)) {
            char buf[24], tmp[20]; int n = 0, t = 0;
            do { tmp[t++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
            while (t) buf[n++] = tmp[--t];
            buf[n++] = '\n';
            write(out_fd, buf, n);
        }
        unsigned int slot = __atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED) % WINDOW;
        unsigned long old = __atomic_exchange_n(&window[slot], a, __ATOMIC_RELAXED);
        if (old && old != a) mprotect((void *)old, 4096, PROT_NONE);
        mprotect((void *)a, 4096, PROT_READ | PROT_EXEC);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

__attribute__((constructor)) static void init(void) {
    const char *want = getenv("PAGE_TRACE_EXE"), *out = getenv("PAGE_TRACE_OUT");
    if (!want || !out) return;
    char exe[4096]; ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    if (strcmp(exe, want)) return;
    // Only the daemon (`tokend serve`): what a command such as `accounts import` runs is not
    // what a running daemon keeps in memory, and tracing it (10k accounts imported by the
    // footprint bench) took most of run.sh's time.
    char args[4096]; int cmdline = open("/proc/self/cmdline", O_RDONLY);
    if (cmdline < 0) return;
    ssize_t got = read(cmdline, args, sizeof args - 1);
    close(cmdline);
    if (got <= 0) return;
    args[got] = 0;
    size_t first = strlen(args) + 1;
    if (first >= (size_t)got || strcmp(args + first, "serve")) return;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[8192];
    while (fgets(line, sizeof line, maps)) {
        unsigned long a, b, off; char perms[8], path[4096] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &a, &b, perms, &off, path) >= 4
            && perms[2] == 'x' && !strcmp(path, exe)) { lo = a; hi = b; file_off = off; }
    }
    fclose(maps);
    if (!lo) return;
    out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, 0);
    mprotect((void *)lo, hi - lo, PROT_NONE);
}

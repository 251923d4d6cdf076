/* QEMU TCG plugin: records every guest exit of the microvisor as the sequence of hypervisor
 * instruction offsets from the lower-EL vector entry to the ERET, and writes each distinct
 * sequence once with how often it ran.  args: base=0x40200000,out=FILE[,boot=1]
 * With boot=1 it instead counts every hypervisor instruction executed, on any core, until
 * the first ERET (the first guest entry), and writes "offset count" lines.
 * Prototypes declared by hand (Debian ships no qemu-plugin.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*vcpu_udata_cb)(unsigned int, void *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *);
size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *, void *, size_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, vcpu_udata_cb,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 4;

static uint64_t base = 0x40200000;
static char *hyp_haddr;
static const char *out_path = "exitprof.txt";
#define LIMIT 0x200000
#define MAXLEN 65536
#define CPUS 64

/* guest: instructions the vCPU ran outside the hypervisor's image before these exits, summed */
struct exit_rec { uint32_t len; uint64_t count; uint32_t *seq; uint64_t hash; uint64_t guest; unsigned vcpu; };
static struct exit_rec *recs;
static size_t nrecs, caprecs;

struct cpu { int in_exit; uint32_t len; uint32_t seq[MAXLEN]; uint64_t guest; uint64_t guest_before; };
static struct cpu *cpus;

static int boot_mode, booted;
static uint64_t *boot_counts;

static uint64_t hash_seq(uint32_t *s, uint32_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ n;
}

static void finish(struct cpu *c)
{
    unsigned vcpu = (unsigned)(c - cpus);
    uint64_t h = hash_seq(c->seq, c->len) ^ vcpu;
    for (size_t i = 0; i < nrecs; i++)
        if (recs[i].hash == h && recs[i].len == c->len && recs[i].vcpu == vcpu &&
            !memcmp(recs[i].seq, c->seq, c->len * 4)) {
            recs[i].count++;
            recs[i].guest += c->guest_before;
            return;
        }
    if (nrecs == caprecs) { caprecs = caprecs ? caprecs * 2 : 256; recs = realloc(recs, caprecs * sizeof *recs); }
    recs[nrecs].len = c->len; recs[nrecs].count = 1; recs[nrecs].hash = h;
    recs[nrecs].guest = c->guest_before;
    recs[nrecs].vcpu = vcpu;
    recs[nrecs].seq = malloc(c->len * 4 + 4);
    memcpy(recs[nrecs].seq, c->seq, c->len * 4);
    nrecs++;
}

/* udata: offset | flags << 32; flag 1: vector entry from a lower EL, 2: eret, 4: hypervisor */
static void exec_cb(unsigned int vcpu, void *udata)
{
    uint64_t u = (uint64_t)udata;
    struct cpu *c = &cpus[vcpu % CPUS];
    uint32_t off = (uint32_t)u;
    unsigned flags = u >> 32;
    if (boot_mode) {
        if (!booted && (flags & 4)) boot_counts[off / 4]++;
        if (flags & 2) booted = 1;
        return;
    }
    if (!(flags & 4)) { if (!c->in_exit) c->guest++; return; }
    if (flags & 1) {
        if (c->in_exit) { c->seq[c->len < MAXLEN ? c->len : MAXLEN - 1] = 0xfffffffe; c->len++; finish(c); }
        c->in_exit = 1; c->len = 0;
        c->guest_before = c->guest; c->guest = 0;
    }
    if (!c->in_exit) return;
    if (c->len < MAXLEN) c->seq[c->len++] = off;
    if (flags & 2) { finish(c); c->in_exit = 0; }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t va = qemu_plugin_insn_vaddr(insn);
        char *ha = qemu_plugin_insn_haddr(insn);
        if (!hyp_haddr && va == base && ha) hyp_haddr = ha;
        if (!hyp_haddr || !ha || ha < hyp_haddr || ha >= hyp_haddr + LIMIT) {
            /* guest code (or the hypervisor before its image is known): counted per vCPU */
            qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_cb, QEMU_PLUGIN_CB_NO_REGS, (void *)0);
            continue;
        }
        uint32_t off = (uint32_t)(ha - hyp_haddr);
        uint32_t word = 0;
        qemu_plugin_insn_data(insn, &word, 4);
        uint64_t flags = 4;
        if (off == 0x1400 || off == 0x1480 || off == 0x1500 || off == 0x1580 || off == 0x1600 ||
            off == 0x1680 || off == 0x1700 || off == 0x1780) flags |= 1;
        if (word == 0xd69f03e0) flags |= 2;
        qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_cb, QEMU_PLUGIN_CB_NO_REGS,
                                               (void *)(off | flags << 32));
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    (void)id; (void)p;
    FILE *f = fopen(out_path, "w");
    if (!f) return;
    if (boot_mode) {
        for (uint32_t i = 0; i < LIMIT / 4; i++)
            if (boot_counts[i]) fprintf(f, "%x %llu\n", i * 4, (unsigned long long)boot_counts[i]);
        fclose(f);
        return;
    }
    for (size_t i = 0; i < nrecs; i++) {
        fprintf(f, "exit %llu %u %llu %u\n", (unsigned long long)recs[i].count, recs[i].len,
                (unsigned long long)recs[i].guest, recs[i].vcpu);
        for (uint32_t j = 0; j < recs[i].len && j < MAXLEN; j++) fprintf(f, "%x\n", recs[i].seq[j]);
    }
    fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info,
                                                               int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "base=", 5)) base = strtoull(argv[i] + 5, 0, 0);
        if (!strncmp(argv[i], "out=", 4)) out_path = strdup(argv[i] + 4);
        if (!strcmp(argv[i], "boot=1")) boot_mode = 1;
    }
    boot_counts = calloc(LIMIT / 4, sizeof *boot_counts);
    cpus = calloc(CPUS, sizeof *cpus);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, 0);
    return 0;
}

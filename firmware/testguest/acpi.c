/* ferrovm test guest: find and check the ACPI tables (RSDP, XSDT/RSDT, FADT,
 * DSDT, MADT, MCFG) and pull out what the other checks need. */
#include "tg.h"

static u8 rd8(u64 a) { return *(volatile u8 *)phys(a); }
static u16 rd16(u64 a) { return *(volatile u16 *)phys(a); }
static u32 rd32(u64 a) { return *(volatile u32 *)phys(a); }
static u64 rd64(u64 a) { return *(volatile u64 *)phys(a); }

static u8 sum(u64 a, u32 len)
{
    u8 s = 0;
    for (u32 i = 0; i < len; i++)
        s += rd8(a + i);
    return s;
}

static int rsdp_valid(u64 a)
{
    if (!a || a + 36 > PHYS_LIMIT || memcmp(phys(a), "RSD PTR ", 8))
        return 0;
    if (sum(a, 20))
        return 0;
    if (rd8(a + 15) >= 2) {
        u32 len = rd32(a + 20);
        if (len < 36 || len > 4096 || sum(a, len))
            return 0;
    }
    return 1;
}

static u64 find_rsdp(u64 hint, const char **how)
{
    if (hint) {
        if (rsdp_valid(hint)) {
            *how = "start_info";
            return hint;
        }
        printf_("# start_info rsdp_paddr 0x%lx is not a valid RSDP\n", hint);
    }
    u64 ebda = (u64)rd16(0x40e) << 4;
    if (ebda >= 0x80000 && ebda < 0xa0000)
        for (u64 a = ebda; a < ebda + 1024; a += 16)
            if (rsdp_valid(a)) {
                *how = "ebda scan";
                return a;
            }
    for (u64 a = 0xe0000; a < 0x100000; a += 16)
        if (rsdp_valid(a)) {
            *how = "bios area scan";
            return a;
        }
    return 0;
}

static void gas_read(u64 a, struct gas *g)
{
    g->space = rd8(a);
    g->width = rd8(a + 1);
    g->addr = rd64(a + 4);
    if (!g->addr)
        g->space = 0xff;
}

static void fail(struct acpi_info *ai, const char *why)
{
    if (ai->ok) {
        ai->ok = 0;
        snprintf_(ai->reason, sizeof ai->reason, "%s", why);
    }
}

/* Validate a table header + checksum; returns its length or 0. */
static u32 table_ok(struct acpi_info *ai, u64 a, char sig[5])
{
    memset(sig, 0, 5);
    if (!a || a + 36 > PHYS_LIMIT) {
        fail(ai, "table address out of range");
        return 0;
    }
    memcpy(sig, phys(a), 4);
    u32 len = rd32(a + 4);
    if (len < 36 || a + len > PHYS_LIMIT || len > (16u << 20)) {
        char r[48];
        snprintf_(r, sizeof r, "bad %s length %u", sig, len);
        fail(ai, r);
        return 0;
    }
    if (sum(a, len)) {
        char r[48];
        snprintf_(r, sizeof r, "bad %s checksum", sig);
        fail(ai, r);
        return 0;
    }
    return len;
}

static void parse_fadt(struct acpi_info *ai, u64 f, u32 len)
{
    ai->fadt = f;
    ai->fadt_len = len;
#define FLD(off, sz) ((off) + (sz) <= len)
    u64 dsdt = FLD(44, 4) ? rd32(f + 40) : 0;
    if (FLD(148, 8) && rd64(f + 140))
        dsdt = rd64(f + 140);
    ai->dsdt = dsdt;
    if (FLD(116, 0)) {
        ai->smi_cmd = rd32(f + 48);
        ai->acpi_enable = rd8(f + 52);
        ai->acpi_disable = rd8(f + 53);
        ai->pm1a_evt = rd32(f + 56);
        ai->pm1b_evt = rd32(f + 60);
        ai->pm1a_cnt = rd32(f + 64);
        ai->pm1b_cnt = rd32(f + 68);
        ai->pm_tmr = rd32(f + 76);
        ai->pm1_evt_len = rd8(f + 88);
        ai->century = rd8(f + 108);
        ai->flags = rd32(f + 112);
    }
    ai->reset_reg.space = 0xff;
    if (FLD(129, 0)) {
        gas_read(f + 116, &ai->reset_reg);
        ai->reset_value = rd8(f + 128);
    }
    /* X_ blocks when the legacy ones are absent (I/O space only). */
    struct gas g;
    if (!ai->pm1a_evt && FLD(160, 0)) {
        gas_read(f + 148, &g);
        if (g.space == 1)
            ai->pm1a_evt = (u32)g.addr;
        if (!ai->pm1_evt_len && g.width)
            ai->pm1_evt_len = g.width / 8;
    }
    if (!ai->pm1a_cnt && FLD(184, 0)) {
        gas_read(f + 172, &g);
        if (g.space == 1)
            ai->pm1a_cnt = (u32)g.addr;
    }
    if (!ai->pm_tmr && FLD(220, 0)) {
        gas_read(f + 208, &g);
        if (g.space == 1)
            ai->pm_tmr = (u32)g.addr;
    }
    ai->sleep_ctl.space = 0xff;
    if (FLD(256, 0))
        gas_read(f + 244, &ai->sleep_ctl);
#undef FLD
}

/* _S5_: NameOp "_S5_" PackageOp PkgLength NumElements elem0 elem1 ... */
static int aml_int(u64 *p, u64 end, u8 *out)
{
    if (*p >= end)
        return 0;
    u8 op = rd8(*p);
    if (op == 0x0a && *p + 1 < end) {       /* BytePrefix */
        *out = rd8(*p + 1);
        *p += 2;
    } else if (op == 0x0b && *p + 2 < end) { /* WordPrefix */
        *out = (u8)rd16(*p + 1);
        *p += 3;
    } else if (op == 0x00 || op == 0x01) {  /* Zero / One */
        *out = op;
        *p += 1;
    } else {
        return 0;
    }
    return 1;
}

static void parse_s5(struct acpi_info *ai, u64 t, u32 len)
{
    u64 end = t + len;
    for (u64 p = t + 36; p + 4 < end; p++) {
        if (rd8(p) != '_' || memcmp(phys(p), "_S5_", 4))
            continue;
        u64 q = p + 4;
        if (q >= end || rd8(q) != 0x12)
            continue;
        q++;
        u8 lead = rd8(q);
        q += 1 + (lead >> 6);               /* PkgLength bytes */
        q++;                                /* NumElements */
        u8 a, b = 0;
        if (!aml_int(&q, end, &a))
            continue;
        if (!aml_int(&q, end, &b))
            b = a;
        ai->s5_found = 1;
        ai->slp_typa = a & 7;
        ai->slp_typb = b & 7;
        return;
    }
}

static void parse_madt(struct acpi_info *ai, u64 t, u32 len)
{
    ai->madt = t;
    for (u64 p = t + 44; p + 2 <= t + len;) {
        u8 type = rd8(p), l = rd8(p + 1);
        if (l < 2 || p + l > t + len)
            break;
        if (type == 0 && l >= 8 && (rd32(p + 4) & 1))
            ai->cpus++;
        if (type == 9 && l >= 16 && (rd32(p + 8) & 1))
            ai->cpus++;
        p += l;
    }
}

static void parse_mcfg(struct acpi_info *ai, u64 t, u32 len)
{
    ai->mcfg = t;
    for (u64 p = t + 44; p + 16 <= t + len; p += 16) {
        if (rd16(p + 8) != 0)
            continue;
        ai->ecam_base = rd64(p);
        ai->ecam_bus_start = rd8(p + 10);
        ai->ecam_bus_end = rd8(p + 11);
        return;
    }
}

void acpi_scan(u64 rsdp_hint, struct acpi_info *ai)
{
    memset(ai, 0, sizeof *ai);
    ai->ok = 1;
    ai->reset_reg.space = ai->sleep_ctl.space = 0xff;

    const char *how = "";
    u64 rsdp = find_rsdp(rsdp_hint, &how);
    if (!rsdp) {
        fail(ai, "no RSDP");
        return;
    }
    ai->rsdp = rsdp;
    u8 rev = rd8(rsdp + 15);
    char oem[7];
    memcpy(oem, phys(rsdp + 9), 6);
    oem[6] = 0;
    printf_("# rsdp 0x%lx (%s) revision %u oem '%s'\n", rsdp, how, rev, oem);

    u64 root = 0;
    int esz = 4;
    if (rev >= 2 && rd64(rsdp + 24)) {
        root = rd64(rsdp + 24);
        esz = 8;
    } else {
        root = rd32(rsdp + 16);
    }
    char sig[5];
    u32 rlen = table_ok(ai, root, sig);
    if (!rlen)
        return;
    if (memcmp(sig, esz == 8 ? "XSDT" : "RSDT", 4)) {
        fail(ai, "root table signature");
        return;
    }
    ai->root = root;

    char list[160];
    int ll = snprintf_(list, sizeof list, "%s", sig);
    for (u64 p = root + 36; p + esz <= root + rlen; p += esz) {
        u64 t = esz == 8 ? rd64(p) : rd32(p);
        u32 len = table_ok(ai, t, sig);
        if (!len)
            continue;
        if ((size_t)ll < sizeof list)
            ll += snprintf_(list + ll, sizeof list - ll, " %s", sig);
        if (!memcmp(sig, "FACP", 4))
            parse_fadt(ai, t, len);
        else if (!memcmp(sig, "APIC", 4))
            parse_madt(ai, t, len);
        else if (!memcmp(sig, "MCFG", 4))
            parse_mcfg(ai, t, len);
    }
    if (ai->dsdt) {
        u32 len = table_ok(ai, ai->dsdt, sig);
        if (len && !memcmp(sig, "DSDT", 4)) {
            if ((size_t)ll < sizeof list)
                snprintf_(list + ll, sizeof list - ll, " %s", sig);
            parse_s5(ai, ai->dsdt, len);
        } else {
            fail(ai, "bad DSDT");
            ai->dsdt = 0;
        }
    }
    printf_("# acpi tables: %s\n", list);
    if (!ai->fadt)
        fail(ai, "no FACP");
    else if (!ai->dsdt)
        fail(ai, "no DSDT");
    else if (!ai->madt)
        fail(ai, "no APIC (MADT)");

    if (ai->fadt)
        printf_("# fadt: pm1a_evt 0x%x pm1a_cnt 0x%x pm_tmr 0x%x (%s) smi_cmd 0x%x acpi_enable 0x%x"
                " reset_reg %s 0x%lx val 0x%x flags 0x%x\n",
                ai->pm1a_evt, ai->pm1a_cnt, ai->pm_tmr,
                ai->flags & FADT_F_TMR_VAL_EXT ? "32-bit" : "24-bit",
                ai->smi_cmd, ai->acpi_enable,
                ai->reset_reg.space == 1 ? "io" : ai->reset_reg.space == 0 ? "mem" : "none",
                ai->reset_reg.addr, ai->reset_value, ai->flags);
    if (ai->dsdt)
        printf_(ai->s5_found ? "# dsdt: _S5_ slp_typ %u\n" : "# dsdt: no _S5_ (using slp_typ 0)\n",
                ai->slp_typa);
    if (ai->mcfg)
        printf_("# mcfg: ecam 0x%lx buses %u-%u\n", ai->ecam_base, ai->ecam_bus_start, ai->ecam_bus_end);
    else
        puts_("# mcfg: none\n");
}

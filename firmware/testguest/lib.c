/* ferrovm test guest: string helpers, COM1 output, a small printf, CMOS. */
#include "tg.h"

void *memset(void *d, int c, size_t n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p < *q ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* ---- COM1: 115200 8N1, polled ---- */
#define COM1 0x3f8

void serial_init(void)
{
    outb(COM1 + 1, 0x00);       /* IER: no interrupts */
    outb(COM1 + 3, 0x80);       /* LCR: DLAB */
    outb(COM1 + 0, 0x01);       /* DLL: 115200 */
    outb(COM1 + 1, 0x00);       /* DLM */
    outb(COM1 + 3, 0x03);       /* LCR: 8N1 */
    outb(COM1 + 2, 0xc7);       /* FCR: enable + clear FIFOs */
    outb(COM1 + 4, 0x03);       /* MCR: DTR | RTS (no OUT2: no IRQ) */
}

void serial_putc(char c)
{
    /* Wait for THRE; bounded so a missing UART cannot hang us. */
    for (u32 i = 0; i < 10000000 && !(inb(COM1 + 5) & 0x20); i++)
        cpu_relax();
    outb(COM1, (u8)c);
}

void puts_(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

/* ---- printf: %d %i %u %x %X %c %s %p with l/ll/z, width, '0' and '-' ---- */
struct out {
    char *buf;                  /* NULL: serial */
    size_t cap, len;
};

static void out_c(struct out *o, char c)
{
    if (!o->buf)
        serial_putc(c);
    else if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void out_num(struct out *o, u64 v, int neg, unsigned base, int upper, int width, int zero, int left)
{
    char tmp[24];
    const char *dig = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    do {
        tmp[n++] = dig[v % base];
        v /= base;
    } while (v);
    int len = n + neg;
    if (!left && !zero)
        for (; len < width; width--)
            out_c(o, ' ');
    if (neg)
        out_c(o, '-');
    if (!left && zero)
        for (; len < width; width--)
            out_c(o, '0');
    while (n)
        out_c(o, tmp[--n]);
    if (left)
        for (; len < width; width--)
            out_c(o, ' ');
}

static void vformat(struct out *o, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_c(o, *fmt);
            continue;
        }
        fmt++;
        int zero = 0, left = 0, width = 0, lng = 0;
        for (;; fmt++) {
            if (*fmt == '0')
                zero = 1;
            else if (*fmt == '-')
                left = 1;
            else
                break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            i64 v = lng ? va_arg(ap, i64) : va_arg(ap, int);
            out_num(o, v < 0 ? -(u64)v : (u64)v, v < 0, 10, 0, width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            u64 v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned);
            out_num(o, v, 0, *fmt == 'u' ? 10 : 16, *fmt == 'X', width, zero, left);
            break;
        }
        case 'p':
            out_c(o, '0');
            out_c(o, 'x');
            out_num(o, (u64)(uintptr_t)va_arg(ap, void *), 0, 16, 0, width, zero, left);
            break;
        case 'c':
            out_c(o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int len = (int)strlen(s);
            if (!left)
                for (; len < width; width--)
                    out_c(o, ' ');
            while (*s)
                out_c(o, *s++);
            if (left)
                for (; len < width; width--)
                    out_c(o, ' ');
            break;
        }
        case '%':
            out_c(o, '%');
            break;
        case 0:
            return;
        default:
            out_c(o, '%');
            out_c(o, *fmt);
        }
    }
}

void vprintf_(const char *fmt, va_list ap)
{
    struct out o = {0, 0, 0};
    vformat(&o, fmt, ap);
}

void printf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf_(fmt, ap);
    va_end(ap);
}

int snprintf_(char *buf, size_t n, const char *fmt, ...)
{
    struct out o = {buf, n, 0};
    va_list ap;
    va_start(ap, fmt);
    vformat(&o, fmt, ap);
    va_end(ap);
    if (n)
        buf[o.len < n ? o.len : n - 1] = 0;
    return (int)o.len;
}

/* ---- CMOS: index port 0x70 (bit 7 = NMI disable, left clear), data 0x71 ---- */
u8 cmos_read(u8 idx)
{
    outb(0x70, idx & 0x7f);
    return inb(0x71);
}

void cmos_write(u8 idx, u8 v)
{
    outb(0x70, idx & 0x7f);
    outb(0x71, v);
}

/*
 * ferrovm test guest: the whole CPL0 part.
 *
 * Ring 0 here is emulated one instruction at a time (~2 us each) and the
 * emulator lacks some instructions, so this stub is short and uses plain
 * integer instructions only: build identity page tables (0-4 GiB, 2 MiB pages,
 * user-accessible), enter long mode, load GDT/TSS/IDT, set up `syscall`, then
 * iretq to CPL3 where all the logic (C) runs natively.
 *
 * Entry per the PVH ABI: 32-bit protected mode, paging off, flat CS/DS,
 * EBX = physical address of struct hvm_start_info.
 */

        .set KCODE,  0x08
        .set KDATA,  0x10
        .set UDATA,  0x1b          /* 0x18 | RPL3 */
        .set UCODE,  0x23          /* 0x20 | RPL3 */
        .set TSSSEL, 0x28

        .set TSS_IOMAP,   104
        .set TSS_LIMIT,   104 + 8192     /* last byte = the 0xff terminator */

        .set COM1, 0x3f8

/* ------------------------------------------------------------------ */
/* PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 32-bit entry. */
        .section .note.Xen, "a"
        .p2align 2
        .long 4                     /* namesz */
        .long 4                     /* descsz */
        .long 18                    /* type   */
        .asciz "Xen"
        .long pvh_start32
        .p2align 2

/* ------------------------------------------------------------------ */
        .section .text.entry, "ax"
        .code32
        .globl pvh_start32
pvh_start32:
        cli
        cld
        movl    %ebx, %esi                      /* start_info, kept in esi */
        movb    $0, triple_req                  /* .data may be stale after a reset */

        /* Page tables are static data (below): a loop filling 2048 entries
           costs ~12k instructions, which nested KVM emulates at ~2 us each. */
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x620, %eax                    /* PAE | OSFXSR | OSXMMEXCPT */
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx               /* EFER */
        rdmsr
        orl     $0x101, %eax                    /* LME | SCE */
        wrmsr
        movl    %cr0, %eax
        andl    $0x9ffffff3, %eax               /* clear CD, NW, EM, TS */
        orl     $0x80000023, %eax               /* PG | NE | MP | PE */
        movl    %eax, %cr0
        lgdt    gdt_ptr
        ljmp    $KCODE, $long64

        .code64
long64:
        movl    $KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        movq    $kstack_top, %rsp

        /* TSS: rsp0, I/O bitmap offset, terminator.  The 8 KiB bitmap is
           zeroed by the CPL3 C code before its first port access (cheap
           there; .sys is NOLOAD, zero on a fresh load). */
        movq    $kstack_top, %rax
        movq    %rax, tss + 4
        movw    $TSS_IOMAP, tss + 102
        movb    $0xff, tss + TSS_LIMIT

        /* TSS descriptor base (type rewritten: clears a stale busy bit) */
        movq    $tss, %rax
        movw    %ax, gdt_tss + 2
        shrq    $16, %rax
        movb    %al, gdt_tss + 4
        movb    $0x89, gdt_tss + 5
        movb    %ah, gdt_tss + 7
        shrq    $16, %rax
        movl    %eax, gdt_tss + 8
        movw    $TSSSEL, %ax
        ltr     %ax

        /* IDT: 32 interrupt gates to 16-byte-spaced stubs */
        movq    $idt, %rdi
        movq    $isr_stubs, %rdx
        movl    $32, %ecx
2:      movq    %rdx, %rax
        movw    %ax, (%rdi)
        movw    $KCODE, 2(%rdi)
        movw    $0x8e00, 4(%rdi)
        shrq    $16, %rax
        movw    %ax, 6(%rdi)
        shrq    $16, %rax
        movl    %eax, 8(%rdi)
        movl    $0, 12(%rdi)
        addq    $16, %rdx
        addq    $16, %rdi
        decl    %ecx
        jnz     2b
        lidt    idt_ptr

        /* syscall: STAR (kernel CS 0x08; sysret base 0x10, unused),
           LSTAR, SFMASK (TF DF IF IOPL AC NT) */
        movl    $0xc0000081, %ecx
        xorl    %eax, %eax
        movl    $0x00100008, %edx
        wrmsr
        movl    $0xc0000082, %ecx
        movl    $syscall_entry, %eax
        xorl    %edx, %edx
        wrmsr
        movl    $0xc0000084, %ecx
        movl    $0x47700, %eax
        xorl    %edx, %edx
        wrmsr

        /* to CPL3: user_entry(start_info) with interrupts off, IOPL 0 */
        movl    %esi, %edi
        pushq   $UDATA
        pushq   $ustack_top
        pushq   $0x2
        pushq   $UCODE
        pushq   $user_entry
        iretq

/* ------------------------------------------------------------------ */
/* syscall: rax = number.  1 = triple fault.  Others return -1.  No sysretq (it triple-faults on this
   host); return with iretq.  rcx = user rip, r11 = user rflags. */
        .globl syscall_entry
syscall_entry:
        movq    %rsp, saved_user_rsp
        movq    $kstack_top, %rsp
        cmpq    $1, %rax
        je      triple_fault
        movq    $-1, %rax
        pushq   $UDATA
        pushq   saved_user_rsp
        pushq   %r11
        pushq   $UCODE
        pushq   %rcx
        iretq

triple_fault:
        /* Point the IDT at not-present gates and fault: neither the fault
           nor the #DF can be delivered, so the CPU shuts down (triple
           fault).  On this host the syscall-entered context cannot run
           privileged instructions (lidt raises #GP, and a zero-limit IDT was
           refused too), so set a flag first: the #GP handler, which does run
           with full privilege, sees it and finishes the job. */
        movb    $1, triple_req
        lidt    dead_idt_ptr
do_triple:
        movabsq $0x8000000000000000, %rax       /* non-canonical: #GP */
        movq    (%rax), %rax
        ud2
4:      hlt
        jmp     4b

/* ------------------------------------------------------------------ */
/* Exceptions: print "!! exception vec=VV err=E rip=R cr2=C" on COM1, halt. */
        .p2align 4
isr_stubs:
        .set vec, 0
        .rept 32
        .p2align 4
        pushq   $vec
        jmp     isr_common
        .set vec, vec + 1
        .endr

isr_common:
        cmpb    $0, triple_req
        je      13f
        lidt    dead_idt_ptr
        jmp     do_triple
        /* ud2 at CPL3 = "wait for an interrupt": sti; hlt; cli, then return
           past the ud2.  On this host interrupts are delivered only in such
           a window at full privilege (neither at CPL3 with IF=1 nor after a
           syscall's iretq), and exception handlers have full privilege. */
13:     cmpq    $6, (%rsp)
        jne     14f
        testb   $3, 16(%rsp)                    /* saved CS: from CPL3? */
        jz      14f
        addq    $2, 8(%rsp)
        addq    $8, %rsp
        sti
        hlt
        cli
        iretq
14:     movq    (%rsp), %rbx                    /* vector */
        xorl    %r12d, %r12d                    /* error code */
        leaq    8(%rsp), %r13                   /* -> rip */
        movl    $0x60227d00, %eax               /* vectors with an error code */
        btl     %ebx, %eax
        jnc     4f
        movq    8(%rsp), %r12
        leaq    16(%rsp), %r13
4:      movq    $msg_exc, %rsi
        call    puts0
        movq    %rbx, %rax
        movl    $2, %ecx
        call    puthex
        movq    $msg_err, %rsi
        call    puts0
        movq    %r12, %rax
        movl    $16, %ecx
        call    puthex
        movq    $msg_rip, %rsi
        call    puts0
        movq    (%r13), %rax
        movl    $16, %ecx
        call    puthex
        movq    $msg_cr2, %rsi
        call    puts0
        movq    %cr2, %rax
        movl    $16, %ecx
        call    puthex
        movq    $msg_nl, %rsi
        call    puts0
5:      cli
        hlt
        jmp     5b

/* putc0: al -> COM1 (poll LSR THRE).  Clobbers dx, r8. */
putc0:
        movl    %eax, %r8d
        movl    $COM1 + 5, %edx
6:      inb     %dx, %al
        testb   $0x20, %al
        jz      6b
        movl    $COM1, %edx
        movl    %r8d, %eax
        outb    %al, %dx
        ret

/* puts0: NUL-terminated string at rsi */
puts0:
        movzbl  (%rsi), %eax
        testl   %eax, %eax
        jz      7f
        call    putc0
        incq    %rsi
        jmp     puts0
7:      ret

/* puthex: low ecx nibbles of rax, most significant first */
puthex:
        movq    %rax, %r9
        movl    %ecx, %r10d
8:      decl    %r10d
        movl    %r10d, %ecx
        shll    $2, %ecx
        movq    %r9, %rax
        shrq    %cl, %rax
        andl    $15, %eax
        movzbl  hexdigits(%rax), %eax
        call    putc0
        testl   %r10d, %r10d
        jnz     8b
        ret

/* ------------------------------------------------------------------ */
/* External interrupts (MSI-X, LAPIC): vectors 0x40-0x4f.  Each stub counts
   its vector in irq_count[n], writes the LAPIC EOI register and returns:
   a handful of plain instructions, as CPL0 is emulated.  The gates are
   written by the CPL3 C code (irq.c); the IDT page is user-accessible. */
        .p2align 4
        .globl irq_stubs
irq_stubs:
        .set n, 0
        .rept 16
        .p2align 4
        incq    irq_count + 8 * n
        jmp     irq_eoi
        .set n, n + 1
        .endr
irq_eoi:
        pushq   %rax
        movl    $0xfee000b0, %eax               /* LAPIC EOI */
        movl    $0, (%rax)
        popq    %rax
        .globl irq_spurious
irq_spurious:                                   /* vector 0xff: no EOI */
        iretq

/* ------------------------------------------------------------------ */
/* CPL3 trampoline: keeps the SysV stack alignment for C. */
        .globl user_entry
user_entry:
        call    tg_main
9:      jmp     9b

/* ------------------------------------------------------------------ */
        .section .rodata
hexdigits:      .ascii "0123456789abcdef"
msg_exc:        .asciz "\n!! exception vec="
msg_err:        .asciz " err="
msg_rip:        .asciz " rip="
msg_cr2:        .asciz " cr2="
msg_nl:         .asciz "\n"

        .section .data
        .p2align 4
gdt:
        .quad 0                                 /* 0x00 null */
        .quad 0x00af9a000000ffff                /* 0x08 kernel code 64 */
        .quad 0x00cf92000000ffff                /* 0x10 kernel data */
        .quad 0x00cff2000000ffff                /* 0x18 user data, DPL3 */
        .quad 0x00affa000000ffff                /* 0x20 user code 64, DPL3 */
gdt_tss:                                        /* 0x28 64-bit TSS (base set at run time) */
        .word TSS_LIMIT & 0xffff
        .word 0
        .byte 0, 0x89, (TSS_LIMIT >> 16) & 0x0f, 0
        .long 0, 0
gdt_end:

        .p2align 3
        .word 0
gdt_ptr:
        .word gdt_end - gdt - 1
        .quad gdt

        .p2align 3
        .word 0
idt_ptr:
        .word 256 * 16 - 1
        .quad idt

        .p2align 3
        .word 0
dead_idt_ptr:
        .word 256 * 16 - 1
        .quad dead_idt

saved_user_rsp: .quad 0
        .p2align 3
        .globl irq_count
irq_count:      .fill 16, 8, 0                  /* per vector 0x40+n; zeroed by C */
triple_req:     .byte 0

/* ------------------------------------------------------------------ */
        .section .sys, "aw", @nobits
        .p2align 12
        .globl idt
idt:    .skip 256 * 16                  /* 0-31 set here; 0x40-0x4f, 0xff by C (irq.c) */
        .globl dead_idt
dead_idt: .skip 32 * 16                 /* all gates not present (zeroed by C) */
        .p2align 4
tss:    .skip TSS_IOMAP
        .globl tss_iomap
tss_iomap:                              /* 8 KiB: zero = port allowed */
        .skip TSS_LIMIT - TSS_IOMAP + 1
        .p2align 4
kstack: .skip 8192
kstack_top:
        .p2align 4
ustack: .skip 32768
        .globl ustack_top
ustack_top:

/* ------------------------------------------------------------------ */
/* Identity map of 0-4 GiB with 2 MiB pages, P|RW|US (user-accessible so
   CPL3 reaches MMIO such as ECAM); PS set in the PD entries. */
        .section .data.pagetables, "aw"
        .p2align 12
        .globl pml4, pdpt
pml4:   .quad pdpt + 7
        .fill 511, 8, 0
pdpt:   .quad pd + 0x0007, pd + 0x1007, pd + 0x2007, pd + 0x3007
        .fill 508, 8, 0
pd:
        .set pde, 0x87
        .rept 2048
        .quad pde
        .set pde, pde + 0x200000
        .endr

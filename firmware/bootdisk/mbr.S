/* bootdisk MBR: LBA 0, loaded by the BIOS at 0000:7C00 with DL = boot drive.
 *
 * Prints "bootdisk: mbr" on COM1 by polling the UART (no BIOS video or serial
 * services), reads ONE sector at FAR_LBA (a patchable field, default 16384 =
 * 8 MiB into the disk) with the INT 13h extensions (AH=41h check, AH=42h read
 * with a Disk Address Packet; both from the "BIOS Enhanced Disk Drive
 * Specification" / Phoenix EDD 3.0) to 0000:8000, checks its magic and jumps
 * there.  The far sector (far.S) calls back into puts/halt below.
 *
 * Fixed offsets the image builder patches (tests/bootdisk.py, README.md):
 *   0x1A8  DAP (16 bytes); its LBA (u64 little endian) at 0x1B0
 *   0x1FE  0x55 0xAA
 */
        .code16
        .section .mbr, "ax"
        .globl _start, puts, putc, halt
_start:
        cli
        xor     %ax, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7c00, %sp            /* stack grows down below us */
        ljmp    $0, $1f                 /* some BIOSes enter at 07C0:0000 */
1:      sti
        cld
        mov     %dl, drive              /* the BIOS's drive number, kept as given */

        mov     $msg_mbr, %si
        call    puts

        /* INT 13h AH=41h: extensions present?  CF clear, BX=AA55h and CX
         * bit 0 (fixed disk access subset: AH=42h) set. */
        mov     $0x41, %ah
        mov     $0x55aa, %bx
        mov     drive, %dl
        int     $0x13
        jc      int13_error
        cmp     $0xaa55, %bx
        jne     no_ext
        test    $1, %cl
        jz      no_ext

        /* INT 13h AH=42h: extended read of dap.count sectors at dap.lba. */
        mov     $0x42, %ah
        mov     drive, %dl
        mov     $dap, %si
        int     $0x13
        jc      int13_error

        cmpw    $FAR_MAGIC, FAR_ADDR+2  /* far.S: "jmp; .word FAR_MAGIC" */
        jne     bad_far
        mov     drive, %dl
        ljmp    $0, $FAR_ADDR

no_ext: mov     $0x01, %ah              /* status 01h: invalid function */
int13_error:                            /* AH = status */
        mov     $msg_err, %si
        call    puts
        mov     %ah, %al
        call    puthex
        mov     $msg_crlf, %si
        call    puts
        jmp     halt

bad_far:
        mov     $msg_bad, %si
        call    puts

/* Idles with interrupts on, so the VMM's system_reset and timers still work. */
halt:   sti
1:      hlt
        jmp     1b

/* puts: prints the NUL-terminated string at DS:SI.  Clobbers SI, AL. */
puts:   lodsb
        test    %al, %al
        jz      2f
        call    putc
        jmp     puts
2:      ret

/* putc: AL to COM1 once the transmitter holding register is empty (LSR bit 5);
 * gives up waiting after 64K polls so a missing UART cannot hang us. */
putc:   push    %dx
        push    %cx
        push    %ax
        mov     $0x3fd, %dx
        xor     %cx, %cx
1:      in      %dx, %al
        test    $0x20, %al
        loopz   1b
        pop     %ax
        mov     $0x3f8, %dx
        out     %al, %dx
        pop     %cx
        pop     %dx
        ret

/* puthex: AL as two upper-case hex digits. */
puthex: push    %ax
        shr     $4, %al
        call    1f
        pop     %ax
1:      and     $0x0f, %al
        add     $'0', %al
        cmp     $'9', %al
        jbe     2f
        add     $7, %al
2:      jmp     putc

msg_mbr:  .asciz "bootdisk: mbr\r\n"
msg_err:  .asciz "bootdisk: int13 error "
msg_bad:  .asciz "bootdisk: far sector magic missing\r\n"
msg_crlf: .asciz "\r\n"
drive:    .byte 0

        /* Disk Address Packet (EDD 3.0 table 1): at a fixed offset so the
         * image builder can patch the LBA. */
        .org    0x1a8
dap:    .byte   0x10                    /* packet size */
        .byte   0
        .word   1                       /* sectors to read: one */
        .word   FAR_ADDR, 0             /* buffer offset, segment */
        .quad   16384                   /* LBA (patched: tests/bootdisk.py) */

        .org    0x1fe
        .byte   0x55, 0xaa

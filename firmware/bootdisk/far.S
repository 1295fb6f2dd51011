/* bootdisk far sector: loaded by the MBR from FAR_LBA to 0000:8000 (DL =
 * boot drive).  Prints a line only it holds, with the per-disk label the image
 * builder patched in, then looks for the ACPI RSDP (ACPI 6.5 section 5.2.5.1:
 * "RSD PTR " on a 16-byte boundary in the first KiB of the EBDA, whose segment
 * is the word at 0040:000E, or in 0E0000h-0FFFFFh), prints its 6-byte OEM ID
 * (offset 9) raw, and idles.
 *
 * With the reboot flag set it then reboots the machine once, the way an OS
 * does (0x06 to the reset control register 0xCF9), remembering in CMOS NVRAM
 * byte 0x7E, which a PC keeps across resets and no firmware uses, that it
 * did; the next boot prints "bootdisk: rebooted" instead.
 *
 * Fixed offsets (relative to the sector) the image builder uses:
 *   0x002  magic FAR_MAGIC (u16), checked by the MBR before it jumps here
 *   0x1DF  reboot flag (u8): nonzero = reboot once (patched: tests/bootdisk.py)
 *   0x1E0  label: up to 31 bytes, NUL-terminated (patched: tests/bootdisk.py)
 */
        .code16
        .section .far, "ax"
far_start:
        jmp     1f
        .word   FAR_MAGIC
1:      mov     $msg_far, %si
        call    puts
        mov     $label, %si
        call    puts
        mov     $msg_crlf2, %si
        call    puts

        mov     0x40e, %ax              /* EBDA segment (BDA 40:0E) */
        mov     $64, %cx                /* 1 KiB = 64 paragraphs */
        call    scan
        jz      found
        mov     $0xe000, %ax            /* 0E0000h-0FFFFFh = 2000h paragraphs */
        mov     $0x2000, %cx
        call    scan
        jz      found
        mov     $msg_none, %si
        call    puts
        jmp     done

found:  mov     $msg_oem, %si           /* ES:0 = the RSDP */
        call    puts
        mov     $9, %bx
1:      mov     %es:(%bx), %al          /* OEMID, 6 bytes, raw */
        call    putc
        inc     %bx
        cmp     $15, %bx
        jne     1b
        mov     $msg_crlf2, %si
        call    puts

done:   cmpb    $0, reboot_flag
        je      halt
        mov     $CMOS_MARK, %al
        out     %al, $0x70
        in      $0x71, %al
        test    %al, %al
        jnz     1f
        mov     $CMOS_MARK, %al         /* mark, then reset as an OS does */
        out     %al, $0x70
        mov     $1, %al
        out     %al, $0x71
        mov     $msg_reboot, %si
        call    puts
        mov     $0xcf9, %dx
        mov     $0x06, %al
        out     %al, %dx
        jmp     halt
1:      mov     $msg_rebooted, %si
        call    puts
        jmp     halt

/* scan: looks for a valid RSDP at AX:0, (AX+1):0, ... for CX paragraphs.
 * Returns ZF set and ES = its segment when found.  Valid: the signature and
 * a zero checksum over the 20 ACPI 1.0 bytes. */
scan:   mov     %ax, %es
        mov     $sig, %si
        xor     %di, %di
        push    %cx
        mov     $8, %cx
        repe cmpsb
        pop     %cx
        jne     2f
        xor     %bx, %bx                /* checksum bytes 0..19 */
        xor     %dl, %dl
1:      add     %es:(%bx), %dl
        inc     %bx
        cmp     $20, %bx
        jne     1b
        test    %dl, %dl
        jz      3f
2:      inc     %ax
        loop    scan
        or      $1, %al                 /* ZF clear: not found (AX is scratch) */
3:      ret

sig:       .ascii "RSD PTR "
msg_far:   .asciz "bootdisk: far sector, "
msg_oem:   .asciz "bootdisk: rsdp oem "
msg_none:  .asciz "bootdisk: rsdp none\r\n"
msg_crlf2: .asciz "\r\n"
msg_reboot:   .asciz "bootdisk: rebooting\r\n"
msg_rebooted: .asciz "bootdisk: rebooted\r\n"
        .set    CMOS_MARK, 0x7e

        .org    0x1df
reboot_flag: .byte 0                    /* patched: 1 = reboot once */
label:  .asciz  "disk ?"                /* patched: "disk A", "disk B" */
        .org    0x200

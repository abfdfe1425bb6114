/*
 * dirty.S - a tiny multiboot (v1) guest that keeps N MiB of RAM dirty.
 *
 * Entered in 32-bit protected mode with paging off (multiboot spec).  N is the
 * last whitespace-separated token of the multiboot command line if it is all
 * digits and non-zero (QEMU passes "<kernel path> <cmdline>"), else 8.  N is
 * clamped to the RAM above 16 MiB that mem_upper reports.  The guest then
 * writes a pass counter to every 4 KiB page of [16 MiB, 16 MiB + N MiB) in an
 * endless loop, so pre-copy under a bandwidth limit never converges.
 * A banner "lmcaps-dirty: N=<n> MiB" goes to COM1.
 *
 * Build: as --32 -o dirty.o dirty.S && ld -m elf_i386 -n -T linker.ld -o dirty.elf dirty.o
 */
        .set MB_MAGIC,     0x1BADB002
        .set MB_FLAGS,     0x00000002          /* bit 1: want mem_lower/mem_upper */
        .set MB_BOOTED,    0x2BADB002          /* %eax from the loader */
        .set REGION_START, 0x01000000          /* 16 MiB */
        .set REGION_MIB,   16
        .set DEFAULT_MIB,  8
        .set MAX_MIB,      65535
        .set COM1,         0x3f8

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .code32
        .globl _start
_start:
        cli
        mov     $stack_top, %esp
        mov     $DEFAULT_MIB, %ebp             /* %ebp = N */
        cmp     $MB_BOOTED, %eax
        jne     have_n                         /* no multiboot info */

        testl   $4, (%ebx)                     /* flags bit 2: cmdline valid */
        jz      clamp
        mov     16(%ebx), %esi
        call    parse_last_number              /* -> %edx, 0 if none */
        test    %edx, %edx
        jz      clamp
        mov     %edx, %ebp
clamp:
        testl   $1, (%ebx)                     /* flags bit 0: mem_* valid */
        jz      have_n
        mov     8(%ebx), %eax                  /* mem_upper: KiB above 1 MiB */
        shr     $10, %eax
        add     $1, %eax                       /* end of RAM in MiB */
        sub     $REGION_MIB, %eax              /* MiB usable from 16 MiB */
        jg      1f
        xor     %eax, %eax
1:      cmp     %eax, %ebp
        jbe     have_n
        mov     %eax, %ebp
have_n:
        mov     $banner, %esi
        call    puts
        mov     %ebp, %eax
        call    putdec
        mov     $banner_end, %esi
        call    puts

        mov     %ebp, %ebx
        shl     $8, %ebx                       /* pages = N * 256 */
        xor     %eax, %eax                     /* pass counter */
pass:
        mov     %ebx, %ecx
        mov     $REGION_START, %edi
        test    %ecx, %ecx
        jz      idle
page:
        mov     %eax, (%edi)                   /* one write dirties the page */
        add     $4096, %edi
        dec     %ecx
        jnz     page
        inc     %eax
        jmp     pass
idle:
        pause
        jmp     idle

/* parse_last_number: %esi = NUL-terminated string -> %edx = value of the last
 * token if it is all digits (1..MAX_MIB), else 0.  Clobbers %eax, %ecx, %edi. */
parse_last_number:
        xor     %edx, %edx                     /* result */
        xor     %edi, %edi                     /* 0 gap, 1 digit token, 2 other token */
        xor     %eax, %eax                     /* value of current token */
next:
        movzbl  (%esi), %ecx
        inc     %esi
        cmp     $' ', %ecx
        jbe     token_end                      /* NUL, space, tab, ... */
        sub     $'0', %ecx
        cmp     $9, %ecx
        ja      not_digit
        cmp     $2, %edi
        je      next
        test    %edi, %edi
        jnz     1f
        xor     %eax, %eax
        mov     $1, %edi
1:      imul    $10, %eax
        add     %ecx, %eax
        cmp     $MAX_MIB, %eax
        jbe     next
not_digit:
        mov     $2, %edi
        jmp     next
token_end:
        test    %edi, %edi
        jz      2f
        xor     %edx, %edx
        cmp     $1, %edi
        jne     2f
        mov     %eax, %edx
2:      xor     %edi, %edi
        test    %ecx, %ecx
        jnz     next
        ret

/* puts: %esi = NUL-terminated string to COM1.  Clobbers %eax, %edx, %esi. */
puts:
        lodsb
        test    %al, %al
        jz      1f
        call    putc
        jmp     puts
1:      ret

/* putc: %al to COM1, waiting for the transmit register.  Clobbers %edx. */
putc:
        push    %eax
        mov     $COM1 + 5, %dx
1:      inb     %dx, %al
        test    $0x20, %al
        jz      1b
        pop     %eax
        mov     $COM1, %dx
        outb    %al, %dx
        ret

/* putdec: %eax as unsigned decimal to COM1.  Clobbers %eax, %ecx, %edx. */
putdec:
        mov     $10, %ecx
        xor     %edx, %edx
        div     %ecx
        push    %edx
        test    %eax, %eax
        jz      1f
        call    putdec
1:      pop     %eax
        add     $'0', %al
        jmp     putc

        .section .rodata
banner:     .asciz "lmcaps-dirty: N="
banner_end: .asciz " MiB\n"

        .section .bss
        .align 16
        .space 4096
stack_top:

/* Cortex-M vector table and reset handler shared by all boards: copy .data, zero .bss,
 * paint the stack for the high-water mark, then main(). Board-specific early setup (clocks,
 * FPU enable) lives in board_init(), called from main. */
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack, _sstack;
extern int main(void);
void SysTick_Handler(void);
void board_uart_isr(void);

#define STACK_PAINT 0xC5C5C5C5u

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss; ) *dst++ = 0;
    /* paint the stack below the current frame (keep 64 bytes of margin) */
    uint32_t *sp;
    __asm volatile ("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &_sstack; p < sp - 16; ) *p++ = STACK_PAINT;
    main();
    for (;;) { }
}

static void Default_Handler(void) { for (;;) { } }
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* 16 core exceptions + 32 external interrupts; only the board's UART (UART_IRQN, board.mk)
 * is used, the others fall into Default_Handler. */
#define N_IRQ 32
_Static_assert(UART_IRQN >= 0 && UART_IRQN < N_IRQ, "UART_IRQN out of the vector table");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
__attribute__((section(".isr_vector"), used))
const void *const vector_table[16 + N_IRQ] = {
    [0] = &_estack, [1] = (void *)Reset_Handler, [2] = (void *)NMI_Handler,
    [3] = (void *)HardFault_Handler, [15] = (void *)SysTick_Handler,
    [16 ... 16 + N_IRQ - 1] = (void *)Default_Handler,
    [16 + UART_IRQN] = (void *)board_uart_isr,
};
#pragma GCC diagnostic pop

/* Cortex-M vector table and reset handler shared by all boards: copy .data, zero .bss,
 * paint the stack for the high-water mark, then main(). Board-specific early setup (clocks,
 * FPU enable) lives in board_init(), called from main. */
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack, _sstack;
extern int main(void);
void SysTick_Handler(void);

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

__attribute__((section(".isr_vector"), used))
const void *const vector_table[16] = {
    &_estack, (void *)Reset_Handler, (void *)NMI_Handler, (void *)HardFault_Handler,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (void *)SysTick_Handler,
};

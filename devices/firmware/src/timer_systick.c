/* SysTick as a 32-bit tick counter: 24-bit down-counter at the core clock plus a wrap count
 * from its interrupt. Used on Cortex-M0/M0+ (no DWT) and on QEMU, where DWT CYCCNT reads 0;
 * under QEMU -icount the ticks follow the deterministic instruction count. */
#include "board.h"

#define SYST_CSR REG32(0xE000E010)
#define SYST_RVR REG32(0xE000E014)
#define SYST_CVR REG32(0xE000E018)

static volatile uint32_t wraps;

void SysTick_Handler(void) { wraps++; }

void timer_init(void)
{
    SYST_RVR = 0xFFFFFF;
    SYST_CVR = 0;
    SYST_CSR = 7; /* enable, interrupt, processor clock */
}

uint32_t timer_now(void)
{
    uint32_t w1, v, w2;
    do {
        w1 = wraps;
        v = SYST_CVR;
        w2 = wraps;
    } while (w1 != w2);
    return (w1 << 24) + (0xFFFFFFu - (v & 0xFFFFFFu));
}
